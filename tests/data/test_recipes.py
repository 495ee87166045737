"""The shipped dataset cards: one per paper target task and quality, all loadable."""

import pytest

from coworld_bench.data.recipes import CARD_DIR, load_recipe, read_card
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import PAPER_PAIRS, resolve_pair

TARGETS = sorted({resolve_pair(p).target.id for pairs in PAPER_PAIRS.values() for p in pairs}
                 | {"mw-door-close", "mw-button-press", "mw-window-close", "mw-handle-press",
                    "mw-drawer-close", "mw-button-press-topdown"})


@pytest.mark.parametrize("quality", ["medium-replay", "medium-expert"])
@pytest.mark.parametrize("task_id", TARGETS)
def test_card_exists_and_loads(task_id, quality):
    card = read_card(f"{task_id}-{quality}")
    assert card["task"] == task_id and card["quality"] == quality
    assert card["behaviour"] == "dreamerv2"  # the paper's definition
    scale = card["paper_scale"]
    assert scale["transitions"] == 100_000 and scale["disk_gb"] > 1
    assert scale["collection_hours_2core_cpu"]["rendering_only_1_process"] > 0
    if task_id.startswith("mw-"):
        _, config = load_recipe(card["name"], behaviour="scripted", episodes=3)
        assert config.behaviour == "scripted" and config.reference_return > 0
        assert config.episodes == 3 and config.env == {"fast_render": False}
    _, paper = load_recipe(card["name"])  # the paper's behaviour, at paper scale
    assert paper.behaviour == "dreamerv2" and paper.episodes == 200


def test_no_stray_cards():
    assert len(list(CARD_DIR.glob("*.yaml"))) == 2 * len(TARGETS) == 32


def test_unknown_card_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="mw-drawer-close-medium-replay"):
        read_card("nope")

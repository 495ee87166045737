"""Dataset cards: small YAML files in ``datasets/`` that say how a standard dataset is
made, how big it is at paper scale and how long it takes.

A card's ``behaviour`` is the paper's; ``alternatives`` holds the settings of other
behaviours (e.g. the scripted fast path on Meta-World), chosen with
``coworld-bench data collect --recipe CARD --behaviour scripted``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from coworld_bench.data.collection import CollectConfig
from coworld_bench.errors import ConfigError

CARD_DIR = Path(__file__).resolve().parents[2] / "datasets"
_FIELDS = {"name", "task", "quality", "behaviour", "episodes", "seed", "env", "alternatives",
           "paper_scale", "notes"}


def find_card(name: str | Path) -> Path:
    """A card by path, or by name among the cards shipped in ``datasets/``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    shipped = CARD_DIR / f"{name}.yaml"
    if shipped.exists():
        return shipped
    names = sorted(p.stem for p in CARD_DIR.glob("*.yaml"))
    raise ConfigError(f"No dataset card {str(name)!r}. Give a .yaml path or one of: "
                            f"{', '.join(names)}.")


def read_card(name: str | Path) -> dict[str, Any]:
    path = find_card(name)
    card = yaml.safe_load(path.read_text())
    if not isinstance(card, dict):
        raise ConfigError(f"{path}: a dataset card is a YAML mapping.")
    unknown = sorted(set(card) - _FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; valid fields: "
                         f"{', '.join(sorted(_FIELDS))}.")
    card["_path"] = str(path)
    return card


def load_recipe(name: str | Path, behaviour: str | None = None,
                episodes: int | None = None) -> tuple[dict[str, Any], CollectConfig]:
    """The card and the collection config it defines (optionally another behaviour)."""
    card = read_card(name)
    behaviour = behaviour or card.get("behaviour")
    params = dict((card.get("alternatives") or {}).get(behaviour, {}) or {})
    config = CollectConfig(
        task_id=card["task"], quality=card["quality"], behaviour=behaviour,
        episodes=episodes or params.pop("episodes", None) or card["episodes"],
        seed=card.get("seed", 0), env=dict(card.get("env") or {}), **params)
    return card, config

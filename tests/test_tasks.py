import pytest

from coworld_bench import tasks
from coworld_bench.tasks import UnknownTaskError, resolve_pair, resolve_task


def test_eighteen_tasks_with_unique_ids_and_codes():
    assert len(tasks.TASKS) == 18
    assert len({t.id for t in tasks.TASKS}) == 18
    suites = [t.suite for t in tasks.TASKS]
    assert (suites.count("metaworld"), suites.count("robodesk"), suites.count("dmc")) == (6, 4, 8)


@pytest.mark.parametrize("name,task_id", [
    ("DC*", "mw-door-close"), ("DCS", "mw-door-close"), ("dcs", "mw-door-close"),
    ("DC", "mw-drawer-close"), ("BP", "mw-button-press"), ("PG", "rd-push-green"),
    ("WW", "dmc-walker-walk"), ("CN", "dmc-cheetah-nopaw"), ("mw-handle-press", "mw-handle-press"),
])
def test_codes_resolve(name, task_id):
    assert resolve_task(name).id == task_id


def test_pair_is_source_then_target():
    pair = resolve_pair("BP-DC")
    assert (pair.source.id, pair.target.id) == ("mw-button-press", "mw-drawer-close")
    assert resolve_pair("BP-DC*").target.id == "mw-door-close"
    assert resolve_pair("BP-DC*").name == "BP-DCS"
    assert resolve_pair(source="mw-window-close", target="rd-open-slide").action_dim == 5


def test_paper_pairs_and_transfer_matrix_resolve():
    for names in tasks.PAPER_PAIRS.values():
        for name in names:
            resolve_pair(name)
    matrix = tasks.metaworld_transfer_pairs()
    assert len(matrix) == 30 and len({(p.source.id, p.target.id) for p in matrix}) == 30


def test_unknown_task_lists_valid_ids():
    with pytest.raises(UnknownTaskError) as err:
        resolve_task("nonexistent")
    message = str(err.value)
    for task in tasks.TASKS:
        assert task.id in message


@pytest.mark.parametrize("name", ["BP-XX", "BPDC", "BP-DC-WC"])
def test_unknown_pair_lists_valid_codes(name):
    with pytest.raises(UnknownTaskError) as err:
        resolve_pair(name)
    message = str(err.value)
    assert repr(name) in message  # names the bad input
    assert "DC*" in message and "WW" in message  # and lists the valid codes

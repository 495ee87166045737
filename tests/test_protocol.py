"""The written evaluation protocol: its hash, the references it defines and the
normalised scores computed from them."""

import json
import subprocess
import sys

import numpy as np
import pytest

from coworld_bench import protocol
from coworld_bench.evaluation import random_action_returns


def test_list_protocol_prints_the_file_and_its_hash():
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "list", "protocol"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert protocol.protocol_text().strip() in result.stdout
    assert f"Protocol hash: {protocol.protocol_hash()}" in result.stdout


def test_hash_changes_when_the_protocol_changes(tmp_path, monkeypatch):
    before = protocol.protocol_record()["hash"]
    assert len(before) == 16 and before == protocol.protocol_hash()
    edited = tmp_path / "protocol.md"
    edited.write_text(protocol.protocol_text().replace("50\n  episodes", "100\n  episodes"))
    assert edited.read_text() != protocol.protocol_text()
    monkeypatch.setattr(protocol, "PROTOCOL_FILE", edited)
    assert protocol.protocol_record()["hash"] != before
    # References computed under the old protocol no longer count under the new one.
    assert protocol.shipped_references() == {}


def test_shipped_references_are_this_protocols():
    data = json.loads(protocol.SHIPPED_FILE.read_text())
    assert data["protocol"] == protocol.protocol_hash(), (
        "protocol.md changed: regenerate the references with python -m coworld_bench.protocol")
    from coworld_bench.tasks import TASKS

    assert set(data["tasks"]) == {t.id for t in TASKS}
    for task in TASKS:
        refs = data["tasks"][task.id]
        if task.suite == "metaworld":
            assert refs["random_episodes"] == 50 and refs["reference_episodes"] == 10
            assert refs["reference"] != refs["random"]


def test_normalised_scores_by_hand_one_task_per_suite():
    # Meta-World (Drawer Close): R_random and R_ref from the shipped table.
    refs = protocol.references("DC")
    r, ref = refs["random"], refs["reference"]
    for score in (r, ref, 3000.0):
        expected = 100.0 * (score - r) / (ref - r)
        assert protocol.normalised(score, refs) == pytest.approx(expected)
    assert protocol.normalised(r, refs) == pytest.approx(0.0)
    assert protocol.normalised(ref, refs) == pytest.approx(100.0)
    # DMC (Walker Walk): V-D4RL's return / 10.
    refs = protocol.references("WW")
    assert (refs["random"], refs["reference"]) == (0.0, 1000.0)
    assert protocol.normalised(734.0, refs) == pytest.approx(73.4)
    # RoboDesk (Push Button): no reference, raw returns only.
    refs = protocol.references("PG")
    assert refs["reference"] is None and protocol.normalised(120.0, refs) is None


def test_metaworld_references_are_random_and_expert_returns_on_the_protocols_seeds():
    """compute_references at small episode counts equals its definition: the mean of
    uniform random actions' returns and of the scripted expert's, on evaluation point
    1 of run seed 0 (episodes 0..n-1)."""
    refs = protocol.compute_references("DC", random_episodes=2, expert_episodes=1)
    random = random_action_returns("DC", 2, seed=0, eval_index=1)
    expert = protocol.expert_returns("DC", 1)
    assert refs["random"] == pytest.approx(np.mean(random))
    assert refs["reference"] == pytest.approx(np.mean(expert))
    assert refs["protocol"] == protocol.protocol_hash()


def test_references_are_cached_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "shipped_references", lambda: {})
    monkeypatch.setattr(protocol, "compute_references",
                        lambda task: {"task": task, "protocol": protocol.protocol_hash(),
                                      "random": 1.0, "reference": 2.0})
    first = protocol.references("WW", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and protocol.protocol_hash() in files[0].name
    monkeypatch.setattr(protocol, "compute_references", lambda task: pytest.fail("recomputed"))
    assert protocol.references("WW", cache_dir=tmp_path) == first

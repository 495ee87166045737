"""`data collect` through the CLI: killed mid-run, it resumes to the same data."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from coworld_bench.data import verify_dataset

from .conftest import TINY

COMMAND = [sys.executable, "-m", "coworld_bench.cli", "data", "collect", "--task", "DC",
           "--quality", "random", "--episodes", "2", "--seed", "0", "--fast-render", "--quiet",
           "--workers", "1"]  # one episode at a time: the kill lands inside the second


def test_sigkill_then_resume_gives_identical_dataset(tiny_dataset, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([*COMMAND, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    manifest = out / "manifest.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["episode_count"] >= 1:
            break
        if proc.poll() is not None:
            pytest.fail(f"collection ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.2)
    time.sleep(1.0)  # now inside episode 2
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads(manifest.read_text())
    assert state["status"] == "partial" and state["episode_count"] == 1
    # Whatever the kill interrupted, every episode file that exists is whole.
    for path in out.glob("ep*.npz"):
        assert path.name in {e["file"] for e in state["episodes"]}
    result = subprocess.run([*COMMAND, "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    final = verify_dataset(out)
    reference = json.loads((tiny_dataset / "manifest.json").read_text())
    assert final["status"] == "complete"
    assert [e["sha256"] for e in final["episodes"]] == [e["sha256"] for e in reference["episodes"]]
    assert not list(out.glob(".*.tmp"))


def test_collect_needs_recipe_or_task():
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "data", "collect"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--recipe" in result.stderr


def test_recipe_with_a_behaviour_it_lacks_explains(tmp_path):
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "data", "collect",
                             "--recipe", "dmc-walker-uphill-medium-replay", "--behaviour",
                             "scripted", "--out", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "Meta-World tasks only" in result.stderr
    assert not (tmp_path / "x").exists()


def test_two_collections_into_one_folder_make_it_once(tiny_dataset, tmp_path):
    """Two runs started together on a shared data root: the second waits for the
    first (its lock on the folder) and finds the dataset made, not half of it."""
    from coworld_bench import locks
    from coworld_bench.data.collection import COLLECT_LOCK

    out = tmp_path / "shared"
    out.mkdir()
    held = locks.hold(out / COLLECT_LOCK)  # a collector already at work
    logs = [tmp_path / f"stderr{i}.txt" for i in range(2)]
    procs = [subprocess.Popen([*COMMAND, "--out", str(out)], stdout=subprocess.DEVNULL,
                              stderr=log.open("w")) for log in logs]
    deadline = time.time() + 120
    while not all("is collecting this dataset; waiting for it" in log.read_text()
                  for log in logs):
        assert time.time() < deadline and all(p.poll() is None for p in procs), \
            [log.read_text() for log in logs]
        time.sleep(0.2)
    assert not (out / "manifest.json").exists()  # nothing written while they wait
    held.close()
    for p, log in zip(procs, logs):
        assert p.wait(timeout=300) == 0, log.read_text()
    final = verify_dataset(out)
    reference = json.loads((tiny_dataset / "manifest.json").read_text())
    assert [e["sha256"] for e in final["episodes"]] == [e["sha256"] for e in reference["episodes"]]

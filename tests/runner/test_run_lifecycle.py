"""The run lifecycle through the real CLI: files, no retraining, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

SMOKE = ["run", "--algo", "bc", "--target", "DC", "--preset", "smoke", "--seed", "3", "--quiet"]


def run_dir(out):
    return out / "DC" / "bc" / "seed3"


@pytest.fixture(scope="module")
def own_root(tmp_path_factory):
    """This module's data root: its first run must make the dataset itself."""
    return tmp_path_factory.mktemp("lifecycle-data")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, own_root):
    out = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", *SMOKE, "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_directory_has_every_file(finished):
    out, result = finished
    d = run_dir(out)
    assert "Estimated wall time on this device (cpu)" in result.stdout
    assert "generating it" in result.stdout  # the missing dataset was made, with a message
    config = json.loads((d / "config.json").read_text())
    assert config["algo"] == "bc" and config["target"] == "mw-drawer-close" and config["seed"] == 3
    assert config["config"]["train_steps"] == 20 and config["preset"] == "smoke"
    for package in ("coworld-bench", "torch", "mujoco", "metaworld", "dm_control", "robodesk"):
        assert config["versions"][package] not in (None, "not installed")
    assert "git_commit" in config
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20] and all("bc_loss" in m for m in metrics)
    evals = [json.loads(line) for line in (d / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [10, 20] and evals[-1]["final"]
    for e in evals:
        assert len(e["returns"]) == 1 and e["mean"] == pytest.approx(np.mean(e["returns"]))
        assert e["std"] == pytest.approx(np.std(e["returns"])) and len(e["success"]) == 1
    ckpt = torch.load(d / "checkpoint" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 20 and "net" in ckpt["algorithm"]
    result = json.loads((d / "result.json").read_text())
    assert result["steps"] == 20 and result["final"]["mean"] == evals[-1]["mean"]
    with np.load(d / "value_trace.npz", allow_pickle=False) as trace:
        assert trace["reward"].shape == (1, 500) and trace["value"].shape == (1, 500)
        g = trace["discounted_return"][0]
        r = trace["reward"][0]
        assert g[-1] == pytest.approx(r[-1]) and g[-2] == pytest.approx(r[-2] + 0.99 * g[-1])
        assert np.isnan(trace["value"]).all()  # behaviour cloning has no critic
    assert list((d / "tb").glob("events.out.tfevents.*"))


def test_second_run_does_not_retrain(finished, cli, own_root):
    out, _ = finished
    d = run_dir(out)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.is_file()}
    result = cli(*SMOKE, "--out", out, env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode == 0, result.stderr
    assert "is finished" in result.stdout and "--force" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.is_file()} == before


def test_sigkill_then_resume_matches_uninterrupted(finished, tmp_path, own_root):
    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    command = [sys.executable, "-m", "coworld_bench.cli", *SMOKE, "--out", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    ckpt = run_dir(tmp_path) / "checkpoint" / "latest.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir(tmp_path) / "result.json").exists()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 20
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"Resuming {run_dir(tmp_path)} from step {killed_at}" in result.stdout
    resumed = json.loads((run_dir(tmp_path) / "result.json").read_text())
    assert resumed["final"]["returns"] == reference["final"]["returns"]
    assert resumed["eval_curve"] == reference["eval_curve"]
    metrics = lambda d: [{k: v for k, v in json.loads(line).items() if k != "wall_time"}  # noqa
                         for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics(run_dir(tmp_path)) == metrics(run_dir(out))
    a = torch.load(run_dir(tmp_path) / "checkpoint" / "latest.pt", weights_only=True)
    b = torch.load(run_dir(out) / "checkpoint" / "latest.pt", weights_only=True)
    for key, value in b["algorithm"]["net"].items():
        assert torch.equal(a["algorithm"]["net"][key], value), key


def test_changed_config_is_refused(finished, cli, own_root):
    out, _ = finished
    result = cli(*SMOKE, "--out", out, "--set", "lr=0.001",
                 env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode != 0
    assert "different config" in result.stderr and "lr" in result.stderr


def test_eval_command(finished, cli):
    out, _ = finished
    result = cli("eval", run_dir(out), "--episodes", "1")
    assert result.returncode == 0, result.stderr
    reference = json.loads((run_dir(out) / "result.json").read_text())
    # Same checkpoint, deterministic policy: a fixed episode seed gives a fixed score.
    assert "at step 20" in result.stdout and "over 1 episodes" in result.stdout
    assert cli("eval", run_dir(out), "--episodes", "1").stdout == result.stdout
    assert reference["final"]["mean"] is not None


def test_paper_preset_on_cpu_prints_hint_and_estimate(finished, cli, own_root, tmp_path):
    """`run` without --preset is the paper preset; on a CPU it says how to ask for quick
    before training, then prints an estimate from measured update times."""
    dataset = own_root / "mw-drawer-close" / "random-random-2ep-seed0-fast"
    result = cli("run", "--algo", "bc", "--target", "DC", "--quiet", "--out", tmp_path,
                 "--set", f"dataset_dir={dataset}", "--set", "train_steps=7",
                 "--set", "eval_episodes=1", "--set", "checkpoint_every=7")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "--preset quick" in out and "Estimated wall time on this device (cpu)" in out
    assert out.index("--preset quick") < out.index("Estimated wall time")
    config = json.loads((tmp_path / "DC" / "bc" / "seed0" / "config.json").read_text())
    assert config["preset"] == "paper" and config["config"]["batch_size"] == 256

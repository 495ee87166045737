"""The model-free and LOMPO baselines and d3rlpy's algorithms end to end through
`coworld-bench run --preset smoke` on real DMC data: each trains, evaluates, writes its
value trace, resumes after kill -9 to the same numbers, and appears in the report under
the paper's name. (DMC targets: their evaluation episodes cost a fifth of Meta-World's.)"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ZOO = {
    "drq-bc": (["--target", "WW"], "WW", "DrQ+BC"),
    "cql": (["--target", "WW"], "WW", "CQL"),
    "curl": (["--target", "WW"], "WW", "CURL"),
    "lompo": (["--target", "WW"], "WW", "LOMPO"),
    "lompo-finetune": (["--pair", "WW-WD"], "WW-WD", "LOMPO Finetune"),
    "d3rlpy-bc": (["--target", "WW"], "WW", "BC (d3rlpy)"),
    "d3rlpy-td3bc": (["--target", "WW"], "WW", "TD3+BC (d3rlpy)"),
    "d3rlpy-cql": (["--target", "WW"], "WW", "CQL (d3rlpy)"),
    "d3rlpy-iql": (["--target", "WW"], "WW", "IQL (d3rlpy)"),
}
# One evaluation, at the end; a checkpoint every 5 of the 20 updates.
SMOKE = ["--preset", "smoke", "--quiet", "--set", "eval_every=0", "--set", "checkpoint_every=5"]


def command(algo, out):
    return [sys.executable, "-m", "coworld_bench.cli", "run", "--algo", algo, *ZOO[algo][0],
            *SMOKE, "--out", str(out)]


def run_dir(out, algo):
    return out / ZOO[algo][1] / algo / "seed0"


@pytest.fixture(scope="module")
def zoo_runs(data_root, tmp_path_factory):
    """``zoo_runs(algo)``: the folder holding the algorithm's uninterrupted smoke run,
    made on first use (the module's tests share them)."""
    out = tmp_path_factory.mktemp("zoo-runs")
    env = {**os.environ, "COWORLD_BENCH_DATA": str(data_root)}

    def ensure(algo):
        if not (run_dir(out, algo) / "result.json").exists():
            result = subprocess.run(command(algo, out), capture_output=True, text=True, env=env,
                                    timeout=600)
            assert result.returncode == 0, (algo, result.stderr[-3000:])
        return out
    return ensure


def metrics(d):
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (d / "metrics.jsonl").read_text().splitlines()]


def assert_same_tensors(a, b, where=""):
    if isinstance(b, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(b, dict):
        assert set(a) == set(b), where
        for key in b:
            assert_same_tensors(a[key], b[key], f"{where}/{key}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}/{i}")
    else:
        assert a == b or (a != a and b != b), where  # NaN == NaN here


@pytest.mark.parametrize("algo", list(ZOO))
def test_trains_evaluates_and_resumes_after_kill_to_the_same_numbers(algo, zoo_runs, data_root,
                                                                       tmp_path):
    from coworld_bench import registry

    reference = run_dir(zoo_runs(algo), algo)
    evals = [json.loads(line) for line in (reference / "eval.jsonl").read_text().splitlines()]
    assert evals[-1]["final"] and np.isfinite(evals[-1]["mean"])
    assert all(np.isfinite(v) for m in metrics(reference) for v in m.values()
               if isinstance(v, float))
    with np.load(reference / "value_trace.npz", allow_pickle=False) as trace:
        if registry.get(algo).has_value:  # its critic valued every visited state
            assert trace["value"].shape == (1, 500) and np.isfinite(trace["value"]).all()
        else:
            assert np.isnan(trace["value"]).all()

    env = {**os.environ, "COWORLD_BENCH_DATA": str(data_root)}
    proc = subprocess.Popen(command(algo, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    ckpt = run_dir(tmp_path, algo) / "checkpoint" / "latest.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, ("the run ended before it could be killed",
                                 proc.stderr.read().decode()[-2000:])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 20
    result = subprocess.run(command(algo, tmp_path), capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from step {killed_at}" in result.stdout
    resumed = run_dir(tmp_path, algo)
    assert metrics(resumed) == metrics(reference)
    a = json.loads((resumed / "result.json").read_text())
    b = json.loads((reference / "result.json").read_text())
    assert a["final"]["returns"] == b["final"]["returns"]
    a, b = (torch.load(d / "checkpoint" / "latest.pt", weights_only=True)
            for d in (resumed, reference))
    assert a["step"] == b["step"] == 20
    assert_same_tensors(a["algorithm"], b["algorithm"], algo)


def test_report_names_the_zoo(zoo_runs, cli, tmp_path):
    for algo in ZOO:
        runs = zoo_runs(algo)
    result = cli("report", runs, "--out", tmp_path / "report", "--bootstrap-reps", "50")
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "report" / "tables" / "dmc_random_smoke.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    offline = [name for algo, (_, target, name) in ZOO.items() if target == "WW"]
    assert set(offline) <= set(rows)
    assert "LOMPO Finetune" in rows
    values = (tmp_path / "report" / "figures" / "value_estimation_dmc_random_smoke.csv")
    traced = {line.split(",")[0] for line in values.read_text().splitlines()[1:]}
    # Figure 5b's model-free rows, and every other new entry with a critic.
    from coworld_bench import registry

    assert {a for a in ZOO if registry.get(a).has_value} <= traced
    assert {"drq-bc", "cql", "d3rlpy-td3bc"} <= traced

"""Every DreamerV2-based algorithm end to end through `coworld-bench run --preset smoke`
on real tasks: it trains, evaluates and writes its value trace."""

import json

import numpy as np
import pytest
import torch

CASES = [
    ("dreamerv2", ["--target", "WW"], "WW"),
    pytest.param("offline-dv2", ["--target", "DC"], "DC", marks=pytest.mark.shared_runs,
                 id="offline-dv2"),
    ("dv2-finetune", ["--pair", "BP-DC"], "BP-DC"),
    ("dv2-finetune-ewc", ["--pair", "BP-DC"], "BP-DC"),
    ("multitask-dv2", ["--pair", "WW-WD"], "WW-WD"),
]


@pytest.mark.parametrize("algo,args,name", CASES,
                         ids=[getattr(c, "id", None) or c[0] for c in CASES])
def test_smoke_run(algo, args, name, cli, tmp_path, request):
    if algo == "offline-dv2":  # made by the session's shared runs (tests/conftest.py)
        d = request.getfixturevalue("shared_runs") / name / algo / "seed0"
    else:
        result = cli("run", "--algo", algo, *args, "--preset", "smoke", "--quiet", "--out",
                     tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        d = tmp_path / name / algo / "seed0"
    evals = [json.loads(line) for line in (d / "eval.jsonl").read_text().splitlines()]
    assert evals[-1]["final"] and len(evals[-1]["returns"]) == 1
    assert np.isfinite(evals[-1]["mean"])
    with np.load(d / "value_trace.npz", allow_pickle=False) as trace:
        assert trace["value"].shape == (1, 500)
        assert np.isfinite(trace["value"]).all()  # a critic valued every visited state
    summary = json.loads((d / "result.json").read_text())["value_trace"]
    assert summary["mean_error"] == pytest.approx(summary["mean_value"]
                                                  - summary["mean_discounted_return"])
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for m in metrics for v in m.values())
    ckpt = torch.load(d / "checkpoint" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 20
    if algo == "dv2-finetune-ewc":  # the Fisher and anchors travel with the checkpoint
        fisher = ckpt["algorithm"]["fisher"]
        assert set(fisher) == {"model", "actor", "critic"}
        assert all((f >= 0).all() for part in fisher.values() for f in part.values())
        assert any(f.sum() > 0 for f in fisher["model"].values())
    if algo in ("dv2-finetune", "dv2-finetune-ewc", "multitask-dv2"):
        assert any(k.startswith("source/") for m in metrics for k in m)
        assert list((d / "work" / "source_replay").glob("ep*.npz"))  # source episodes kept
    config = json.loads((d / "config.json").read_text())
    if "--pair" in args:
        assert config["config"]["pretrain_env_steps"] == 50 and config["action_dim"] == 6 - 2 * (
            name == "BP-DC")

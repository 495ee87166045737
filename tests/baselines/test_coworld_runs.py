"""CoWorld end to end through `coworld-bench run --preset smoke` on real pairs."""

import csv
import json

import numpy as np
import pytest


def load(d, name):
    return [json.loads(line) for line in (d / name).read_text().splitlines()]


def check_run(d):
    evals = load(d, "eval.jsonl")
    assert evals[-1]["final"] and np.isfinite(evals[-1]["mean"])
    with np.load(d / "value_trace.npz", allow_pickle=False) as trace:
        assert trace["value"].shape == (1, 500) and np.isfinite(trace["value"]).all()
    return load(d, "metrics.jsonl")


def test_coworld_metaworld_pair_logs_every_transfer(shared_runs):
    """WC->DC, run by the session's shared fixture (tests/conftest.py)."""
    d = shared_runs / "WC-DC" / "coworld" / "seed0"
    metrics = check_run(d)
    keys = set().union(*metrics)
    for key in ("target/alignment_kl", "target/minmax_active", "target/source_value",
                "target/critic/value_mean", "target/critic/minmax", "target/model/state_align",
                "source/relabelled_reward", "source/true_target_reward", "source/eta",
                "source/model/relabel", "source0/model/image"):
        assert key in keys, key
    # The warm-up: world-model-only target updates before co-training's first (A).
    # (Logs average windows of log_every updates: the first (A) may share one with it.)
    first_align = next(i for i, m in enumerate(metrics) if "target/alignment_kl" in m)
    assert any("warmup/model/image" in m for m in metrics[:first_align + 1])
    assert not any("warmup/model/image" in m for m in metrics[first_align + 1:])
    # Diagnostics: action std (at least the 0.1 floor), the reward model on the
    # evaluation's real steps against what the policy earned.
    stds = [m["target/actor/std_mean"] for m in metrics if "target/actor/std_mean" in m]
    assert stds and min(stds) >= 0.1
    final = load(d, "eval.jsonl")[-1]
    for key in ("reward_per_step", "predicted_reward_per_step", "reward_error"):
        assert np.isfinite(final[key]), key
    assert final["reward_per_step"] == pytest.approx(final["mean"] / 500)
    active = [m["target/minmax_active"] for m in metrics if "target/minmax_active" in m]
    assert all(0.0 <= a <= 1.0 for a in active)
    etas = [m["source/eta"] for m in metrics if "source/eta" in m]
    assert all(0.1 <= e <= 1.0 for e in etas)
    # Latent snapshots for the report: both encoders on the same fixed target frames, at
    # the start of co-training and after the last update.
    with np.load(d / "work" / "latents.npz", allow_pickle=False) as z:
        assert {"before_source", "before_target", "after_source", "after_target"} <= set(z.files)
        assert z["before_source"].shape == z["after_target"].shape
        assert z["before_source"].shape[0] == 256
        assert not np.allclose(z["before_target"], z["after_target"])  # the target trained
        assert str(z["after_source_task"]) == "mw-window-close"


def test_coworld_metaworld_to_robodesk_low_dimensional_sparse_source(cli, tmp_path):
    """Two of the paper's RoboDesk settings in one run (a RoboDesk episode costs a
    minute of rendering here): a Meta-World source observed through its state vector,
    with sparse rewards, its 4-d actions padded to RoboDesk's 5."""
    result = cli("run", "--algo", "coworld", "--pair", "BP-PG", "--preset", "smoke", "--quiet",
                 "--set", "source_sparse_reward=true", "--set", "source_obs=state",
                 "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    d = tmp_path / "BP-PG" / "coworld" / "seed0"
    metrics = check_run(d)
    config = json.loads((d / "config.json").read_text())
    assert config["action_dim"] == 5 and config["config"]["source_sparse_reward"] is True
    assert config["config"]["source_obs"] == "state"
    # The source replay holds 5-d actions (the padded entry is ignored by Meta-World), the
    # state vector and no image, and, with the sparse source, rewards of 0 or 1 only.
    with np.load(sorted((d / "work" / "source0_replay").glob("ep*.npz"))[0],
                 allow_pickle=False) as episode:
        assert episode["action"].shape[1] == 5
        assert set(np.unique(episode["reward"])) <= {0.0, 1.0}
        assert "state" in episode.files
    keys = set().union(*metrics)
    assert "target/minmax_active" in keys  # (C) transfers
    # Observation spaces differ: no latent-state alignment, no reward relabelling.
    assert "target/alignment_kl" not in keys and "source/model/relabel" not in keys


def test_coworld_dmc_pair(cli, tmp_path):
    result = cli("run", "--algo", "coworld", "--pair", "WW-WD", "--preset", "smoke", "--quiet",
                 "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    d = tmp_path / "WW-WD" / "coworld" / "seed0"
    check_run(d)
    config = json.loads((d / "config.json").read_text())["config"]
    assert (config["beta2"], config["k"], config["alpha"]) == (1.5, 0.9, 1.0)  # DMC's values


def test_multisource_logs_its_selection(shared_runs):
    d = shared_runs / "DC" / "coworld-multisource" / "seed0"
    metrics = check_run(d)
    with open(d / "work" / "source_selection.csv") as f:
        rows = list(csv.DictReader(f))
    config = json.loads((d / "config.json").read_text())["config"]
    assert len(rows) == config["rounds"] * config["target_updates"]
    assert {r["selected"] for r in rows} <= {"mw-button-press", "mw-window-close"}
    for r in rows:  # the selected source is the one with the smallest KL
        kls = {k[3:]: float(v) for k, v in r.items() if k.startswith("kl_")}
        assert r["selected"] == min(kls, key=kls.get)
    assert any("target/selected/BP" in m for m in metrics)


@pytest.mark.parametrize("args", [["--pair", "BP-DC"], ["--target", "DC", "--set", "sources=DC,BP"]])
def test_bad_coworld_input(cli, tmp_path, args):
    algo = "coworld-multisource" if "--target" in args else "coworld-nope"
    result = cli("run", "--algo", algo, *args, "--preset", "smoke", "--out", tmp_path / "r")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert ("is the target itself" in result.stderr) or ("coworld-brute-force" in result.stderr)
    assert not (tmp_path / "r").exists()


def test_evaluation_scores_do_not_depend_on_episodes_side_by_side(shared_runs, cli):
    """The acting world model samples its posterior latent (DreamerV2), so each
    evaluation episode draws from its own random state: two episodes side by side in
    two simulator processes score what they score one after another."""
    d = shared_runs / "WC-DC" / "coworld" / "seed0"
    side_by_side = cli("eval", d, "--episodes", "2", "--eval-workers", "2")
    one_by_one = cli("eval", d, "--episodes", "2", "--eval-workers", "1")
    assert side_by_side.returncode == 0, side_by_side.stderr
    assert "over 2 episodes" in one_by_one.stdout
    assert side_by_side.stdout == one_by_one.stdout

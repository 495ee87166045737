"""World models on state vectors (``--set obs=state``): every algorithm that offers the
setting runs with it end to end through `coworld-bench run --preset smoke`, and states
of different lengths are zero-padded as actions are."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from baselines.core.agent import DreamerAgent, pad_states
from baselines.core.config import SMOKE_MODEL, DreamerConfig
from baselines.core.online import dataset_state_dim
from coworld_bench import registry
from coworld_bench.errors import ConfigError


def state_algorithms() -> list[str]:
    """Every registered algorithm with a DreamerV2 world model (``list settings``
    offers ``obs`` for each)."""
    return [name for name in registry.names()
            if any(f.name == "obs" for f in dataclasses.fields(registry.get(name).Config))]


# Task arguments by algorithm (default: a Meta-World pair, or its target). Two runs read
# states of different lengths (walker 24, cheetah 17), one a source of images.
SPECIAL = {
    "multitask-dv2": ["--source", "WW", "--target", "CR"],
    "coworld-no-value-constraint": ["--source", "WW", "--target", "CR",
                                    "--set", "source_obs=state"],
    "coworld-no-reward-align": ["--pair", "DC-BP"],  # image sources: (A), (B) off
    "coworld-multisource": ["--target", "BP", "--set", "sources=DC,WC",
                            "--set", "source_obs=state"],
}


def task_args(name: str) -> list[str]:
    if name in SPECIAL:
        return SPECIAL[name]
    cls = registry.get(name)
    if not cls.needs_source:
        return ["--target", "BP"]
    if any(f.name == "source_obs" for f in dataclasses.fields(cls.Config)):
        return ["--pair", "DC-BP", "--set", "source_obs=state"]
    return ["--pair", "DC-BP"]


def test_every_dreamer_algorithm_offers_obs():
    assert {"dreamerv2", "offline-dv2", "dv2-finetune", "dv2-finetune-ewc", "multitask-dv2",
            "coworld", "coworld-multisource", "coworld-no-state-align",
            "coworld-no-reward-align", "coworld-no-value-constraint",
            "coworld-brute-force"} <= set(state_algorithms())


@pytest.mark.parametrize("algo", state_algorithms())
def test_state_world_model_runs(algo, cli, tmp_path):
    result = cli("run", "--algo", algo, *task_args(algo), "--preset", "smoke", "--quiet",
                 "--set", "obs=state", "--set", "eval_every=0", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (d,) = tmp_path.glob(f"*/{algo}/seed0")
    final = [json.loads(line) for line in (d / "eval.jsonl").read_text().splitlines()][-1]
    assert final["final"] and np.isfinite(final["mean"])
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for m in metrics for v in m.values())
    config = json.loads((d / "config.json").read_text())["config"]
    assert config["obs"] == "state"
    if "source_obs" in config:  # CoWorld: (A) and (B) need both kinds the same
        keys = set().union(*metrics)
        same = config["source_obs"] == "state"
        assert ("target/alignment_kl" in keys) == same
        assert ("target/model/state_align" in keys) == (same and not config["no_state_align"])
        assert ("source/model/relabel" in keys) == (same and not config["no_reward_align"])
        if algo == "coworld":  # both encoders read the same target states
            assert "target/model/state_align" in keys
            with np.load(d / "work" / "latents.npz", allow_pickle=False) as z:
                assert z["after_source"].shape == z["after_target"].shape


def test_states_are_padded_as_actions():
    assert pad_states(np.ones((2, 3, 17), np.float32), 24).shape == (2, 3, 24)
    padded = pad_states(torch.ones(2, 17), 24)
    assert padded.shape == (2, 24) and padded[:, 17:].eq(0).all() and padded[:, :17].eq(1).all()
    assert pad_states(np.ones(24, np.float32), 24).shape == (24,)
    cfg = DreamerConfig(**{**SMOKE_MODEL, "obs": "state", "batch_size": 2, "seq_len": 3})
    agent = DreamerAgent(cfg, 6, torch.device("cpu"), 0, state_dim=24)

    class Replay:  # 17-d states, 4-d actions: a shorter task's episodes
        def sample(self, rng, batch, length):
            return {"state": np.ones((batch, length, 17), np.float32),
                    "action": np.zeros((batch, length, 4), np.float32),
                    "reward": np.zeros((batch, length), np.float32),
                    "discount": np.ones((batch, length), np.float32),
                    "is_first": np.zeros((batch, length), bool)}

    batch = agent.batch(Replay())
    assert batch["state"].shape == (2, 3, 24) and batch["action"].shape == (2, 3, 6)
    agent.model_loss(batch)  # the encoder reads the padded states
    obs = {"state": np.ones(17, np.float32), "is_first": True}
    action, _ = agent.act(obs, None, deterministic=True)
    assert action.shape == (6,)


def test_state_world_model_needs_states_in_the_dataset():
    ctx = SimpleNamespace(state_dim=0, dataset=SimpleNamespace(directory="/data/imported"))
    with pytest.raises(ConfigError, match="obs=state needs the target's state vectors"):
        dataset_state_dim(ctx)

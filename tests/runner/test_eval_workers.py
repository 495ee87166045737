"""Evaluation simulators in worker processes: how many by default, and that they start
before the first update (so their start-up overlaps training, e.g. an online prefill)."""

import os

import pytest

from coworld_bench.runner import RunRequest, prepare


def test_workers_start_before_the_first_update_one_per_episode(tmp_path, data_root,
                                                               monkeypatch):
    monkeypatch.setenv("COWORLD_BENCH_DATA", str(data_root))
    run = prepare(RunRequest(
        algo="bc", target="DC", preset="smoke", out=str(tmp_path), progress=False,
        overrides={"train_steps": 2, "eval_every": 0, "eval_episodes": 2,
                   "checkpoint_every": 2, "log_every": 1, "random_baseline": False}))
    seen = []
    train_step = run.algo_cls.train_step

    def watched(algo, step):
        seen.append(getattr(run, "_workers", None))
        return train_step(algo, step)

    monkeypatch.setattr(run.algo_cls, "train_step", watched)
    result = run.execute()
    assert len(seen) == 2 and seen[0] is not None and seen[1] is seen[0]
    assert seen[0].size == min(2, 2 * (os.cpu_count() or 1))  # one per episode
    assert run._workers is None  # closed when the run ends
    assert len(result["final"]["returns"]) == 2


def test_reward_model_check_pairs_each_prediction_with_the_reward_of_its_observation():
    """act() k sees the observation that came with reward k - 1 (the reset has none):
    predictions 9, 1.5, 2.5 against rewards 1, 2, 3 compare 1.5 with 1 and 2.5 with 2."""
    from types import SimpleNamespace

    from coworld_bench.evaluation import reward_model_check

    episode = SimpleNamespace(rewards=[1.0, 2.0, 3.0], predicted=[9.0, 1.5, 2.5])
    out = reward_model_check([episode, episode])
    assert out["reward_per_step"] == pytest.approx(2.0)
    assert out["predicted_reward_per_step"] == pytest.approx(2.0)
    assert out["reward_error"] == pytest.approx(0.5)
    model_free = SimpleNamespace(rewards=[1.0, 2.0], predicted=[float("nan")] * 2)
    assert reward_model_check([model_free]) == {"reward_per_step": 1.5}

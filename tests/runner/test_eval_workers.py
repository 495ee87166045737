"""Evaluation simulators in worker processes: how many by default, and that they start
before the first update (so their start-up overlaps training, e.g. an online prefill)."""

import os

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

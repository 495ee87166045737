"""The online simulator in a worker process (``collect_worker=on``, baselines.core.collector):
the worker acts with the learner's current weights, collects ``train_every`` env steps
per update, and a run restarted from a weights-only checkpoint collects and trains
exactly as the uninterrupted one. Real CoWorld on Window Close -> Drawer Close."""

import io
import math
import shutil

import numpy as np
import pytest
import torch

from coworld_bench.data import Dataset, collect
from coworld_bench.runner import RunRequest, prepare


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(data_root, out, worker="on"):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COWORLD_BENCH_DATA", str(data_root))
        run = prepare(RunRequest(algo="coworld", pair="WC-DC", preset="smoke",
                                 overrides={"collect_worker": worker, "warmup_rounds": 0},
                                 device="cpu",
                                 out=str(out), progress=False))
        if run.collect_config is not None:
            collect(run.collect_config, run.dataset_directory, progress=False)
        run.dir.mkdir(parents=True, exist_ok=True)
        algo, _ = run.build(Dataset(run.dataset_directory))
    return algo, run


def train(algorithm, start, stop):
    metrics = {}
    for step in range(start, stop):
        metrics = algorithm.train_step(step)
    return {k: float(v) for k, v in metrics.items()}


def test_worker_acts_with_the_learners_weights_and_resumes_exactly(data_root, tmp_path):
    torch.manual_seed(0)
    algorithm, run = build(data_root, tmp_path / "a")
    learner = algorithm.sources[0].learner
    assert learner.worker is not None and learner.driver is None
    cfg = algorithm.config
    # Smoke schedule: 6 pretraining updates, then target 6-9, source 10-12, target 13-16,
    # source 17-19. The first step collects (random actions) until an episode is done.
    assert [algorithm.phase(s)[0] for s in (5, 6, 10, 13, 17)] == [
        "pretrain", "target", "source", "target", "source"]
    train(algorithm, 0, 12)  # pretraining and two source updates collect in the worker
    # Every update took its train_every steps: the prefill of one whole episode
    # (500 steps), then 5 per pretraining and per source update.
    assert learner.env_steps == 500 + 5 * 5 + 5 * 2
    assert learner.replay.total_episodes == 1 and learner.ready()
    # The worker's policy is the learner's: the same deterministic action.
    obs = {"image": Dataset(run.dataset_directory).load_episode(0)["image"][3],
           "is_first": True}
    with torch.random.fork_rng():  # the same draw of the posterior's latent
        torch.manual_seed(5)
        mine, _ = algorithm.sources[0].agent.act(obs, None, deterministic=True)
    np.testing.assert_allclose(learner.worker.act(obs, seed=5), mine, rtol=1e-5, atol=1e-6)

    # A restart: a weights-only copy of the state in a freshly built run, with the run's
    # work files (the replay on disk) as a kill would leave them.
    f = io.BytesIO()
    torch.save(algorithm.state_dict(), f)
    f.seek(0)
    state = torch.load(f, weights_only=True)
    torch.manual_seed(1)
    again, run_again = build(data_root, tmp_path / "b")
    shutil.copytree(run.dir / "work", run_again.dir / "work", dirs_exist_ok=True)
    again.load_state_dict(state)
    rng = torch.get_rng_state()
    ahead = train(algorithm, 12, 20)
    torch.set_rng_state(rng)
    behind = train(again, 12, 20)
    try:
        assert ahead == behind and all(math.isfinite(v) for v in ahead.values())
        a, b = algorithm.sources[0].learner, again.sources[0].learner
        assert a.env_steps == b.env_steps == 500 + 5 * 5 + 5 * 6
        assert [e["action"].tobytes() for e in a.replay.episodes] == [
            e["action"].tobytes() for e in b.replay.episodes]
        # The workers took the same draws (the restarted one's were restored).
        ra, rb = a.worker.state()["rngs"], b.worker.state()["rngs"]
        assert torch.equal(ra["torch"], rb["torch"]) and ra["explore"] == rb["explore"]
    finally:
        algorithm.close()
        again.close()
    assert algorithm.sources[0].learner.worker._process is None


def test_the_worker_is_on_by_default_for_cuda_only():
    from baselines.coworld import CoWorld
    from baselines.core.online import use_collect_worker

    cfg = CoWorld.make_config("smoke", {})
    assert cfg.collect_worker == "auto"
    assert not use_collect_worker(cfg, "cpu") and use_collect_worker(cfg, "cuda")
    on, off = (CoWorld.make_config("smoke", {"collect_worker": v}) for v in ("on", "off"))
    assert use_collect_worker(on, "cpu") and not use_collect_worker(off, "cuda")

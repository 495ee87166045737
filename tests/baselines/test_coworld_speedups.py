"""Work CoWorld no longer does, on real CoWorld (Window Close -> Drawer Close, smoke
preset): the frozen source encoder's embeddings of target frames cached within a target
stage (baselines.coworld.FrameEmbeddings: the same embeddings as encoding every batch,
each frame encoded once per stage, cleared when the source learns); evaluation acting
on one CPU thread (no second thread spin-waiting beside the simulators)."""

import numpy as np
import pytest
import torch

from coworld_bench.data import Dataset, collect
from coworld_bench.runner import RunRequest, prepare


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(data_root, out, eval_env=False):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COWORLD_BENCH_DATA", str(data_root))
        run = prepare(RunRequest(algo="coworld", pair="WC-DC", preset="smoke",
                                 overrides={"collect_worker": "off", "warmup_rounds": 0}, device="cpu",
                                 out=str(out), progress=False))
        if run.collect_config is not None:
            collect(run.collect_config, run.dataset_directory, progress=False)
        run.dir.mkdir(parents=True, exist_ok=True)
        algo, env = run.build(Dataset(run.dataset_directory))
    return (algo, env) if eval_env else algo


def train(algorithm, start, stop):
    history = []
    for step in range(start, stop):
        history.append({k: float(v) for k, v in algorithm.train_step(step).items()})
    return history


def test_cached_source_embeddings_equal_fresh_ones_and_follow_source_updates(data_root,
                                                                             tmp_path):
    torch.manual_seed(0)
    algorithm = build(data_root, tmp_path / "a")
    cache = algorithm.frame_embeddings[0]
    assert cache.enabled and cache.rows == int((algorithm.ctx.dataset.lengths + 1).sum())
    # Smoke schedule: pretraining 0-5, target 6-9, source 10-12, target 13-16.
    assert [algorithm.phase(s)[0] for s in (5, 6, 10, 13)] == [
        "pretrain", "target", "source", "target"]
    train(algorithm, 0, 6)

    def lookups(n):
        seen = set()
        for _ in range(n):
            episode, start = rows = algorithm.sampler.sample_indices()
            images = algorithm.target.batch(algorithm.sampler, rows)["image"]
            cached = algorithm.source_embeddings(images, rows)[0]
            fresh = algorithm.source_embeddings(images)[0]
            torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-6)
            offsets = np.concatenate([[0], np.cumsum(algorithm.ctx.dataset.lengths + 1)])
            seen |= {int(offsets[e] + s + t) for e, s in zip(episode, start)
                     for t in range(images.shape[1])}
        return fresh, seen

    before, seen = lookups(4)
    assert cache.encoded == len(seen)  # every frame encoded once, however often drawn
    train(algorithm, 10, 11)  # a source update clears the cache ...
    assert not cache.known.any()
    after, _ = lookups(2)  # ... and the lookups follow the new encoder
    assert not torch.allclose(before, after)
    algorithm.close()


def test_training_with_and_without_the_cache_agrees(data_root, tmp_path):
    runs = []
    for enabled in (True, False):
        torch.manual_seed(0)
        algorithm = build(data_root, tmp_path / str(enabled))
        algorithm.frame_embeddings[0].enabled = enabled
        runs.append(train(algorithm, 0, 17))
        algorithm.close()
    with_cache, without = runs
    assert [sorted(m) for m in with_cache] == [sorted(m) for m in without]
    for a, b in zip(with_cache, without):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_evaluation_acts_on_one_thread_and_restores_the_setting(data_root, tmp_path):
    from coworld_bench.evaluation import evaluate

    algorithm, env = build(data_root, tmp_path / "a", eval_env=True)
    seen = []
    policy = algorithm.policy

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return policy(*args, **kwargs)

    algorithm.policy = spy
    torch.set_num_threads(2)
    result = evaluate(algorithm, env, 1, seed=0, eval_index=1)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    assert np.isfinite(result["mean"])
    algorithm.close()
    env.close()

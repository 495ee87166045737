"""Collect from a real env, verify, reload, sample."""

import json

import numpy as np
import pytest

from coworld_bench.data import (
    CollectConfig, Dataset, DatasetError, SequenceSampler, TransitionSampler, collect,
    verify_dataset,
)
from coworld_bench.data.collection import run_episode
from coworld_bench.data.format import FORMAT_VERSION, sha256_file

from .conftest import TINY


def test_collection_with_a_process_per_episode_gives_the_same_data(tiny_dataset, tmp_path):
    """Episodes are seeded by their index: two worker processes write the files one
    process writes (the runner collects with one worker per core)."""
    manifest = collect(CollectConfig(**TINY), tmp_path / "two", workers=2, progress=False)
    reference = json.loads((tiny_dataset / "manifest.json").read_text())
    assert [e["sha256"] for e in manifest["episodes"]] == \
        [e["sha256"] for e in reference["episodes"]]


def test_manifest_describes_the_data(tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["task_id"] == "mw-drawer-close" and manifest["quality"] == "random"
    assert manifest["behaviour"] == "random" and manifest["seed"] == 0
    assert manifest["env"]["fast_render"] is True and manifest["env"]["camera"] == "corner"
    assert manifest["episode_count"] == 2 and manifest["step_count"] == 1000
    assert manifest["status"] == "complete"
    for entry in manifest["episodes"]:
        assert sha256_file(tiny_dataset / entry["file"]) == entry["sha256"]
    returns = [e["return"] for e in manifest["episodes"]]
    assert manifest["returns"]["mean"] == pytest.approx(np.mean(returns))
    verify_dataset(tiny_dataset)


def test_reload_gives_identical_arrays(tiny_dataset):
    ds = Dataset(tiny_dataset)
    assert ds.num_steps == 1000 and ds.image_shape == (64, 64, 3) and ds.action_dim == 4
    fresh = run_episode(CollectConfig(**TINY), 1)["arrays"]  # same seed, regenerated
    loaded = ds.load_episode(1)
    with np.load(tiny_dataset / ds.manifest["episodes"][1]["file"], allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(fresh)
        for key in fresh:
            np.testing.assert_array_equal(loaded[key], fresh[key])
            np.testing.assert_array_equal(npz[key], fresh[key])
    assert loaded["image"].dtype == np.uint8 and loaded["is_first"].dtype == bool
    assert loaded["reward"][0] == 0 and not loaded["action"][0].any()
    assert loaded["is_first"][0] and loaded["is_last"][-1] and not loaded["is_terminal"].any()


def test_sequences_stay_inside_episodes(tiny_dataset):
    ds = Dataset(tiny_dataset)
    episodes = [ds.load_episode(i) for i in range(len(ds))]
    sampler = SequenceSampler(ds, batch_size=64, length=450, seed=1)
    starts = []
    for _ in range(3):
        index = sampler.sample_indices()
        batch = sampler.sample(index)
        for b, (e, s) in enumerate(zip(*index)):
            assert 0 <= s and s + 450 <= 501
            np.testing.assert_array_equal(batch["image"][b], episodes[e]["image"][s:s + 450])
            np.testing.assert_array_equal(batch["is_first"][b], episodes[e]["is_first"][s:s + 450])
            # is_first only ever on the episode's reset row; is_last only on its last row.
            assert not batch["is_first"][b][1:].any()
            assert batch["is_first"][b][0] == (s == 0)
            assert not batch["is_last"][b][:-1].any()
            starts.append(s)
    assert min(starts) == 0 or max(starts) == 51  # the whole valid range is reachable
    assert set(starts) <= set(range(52))
    with pytest.raises(DatasetError, match="no episode has 600 rows"):
        SequenceSampler(ds, 2, 600)


def test_transitions_n_step_and_frame_stack_by_hand(tiny_dataset):
    ds = Dataset(tiny_dataset)
    gamma, n, k = 0.9, 3, 3
    sampler = TransitionSampler(ds, batch_size=32, n_step=n, frame_stack=k, discount=gamma, seed=2)
    episodes = np.array([0, 0, 1, 1, 1])
    steps = np.array([0, 1, 499, 497, 250])
    batch = sampler.sample((episodes, steps))
    for b, (e, t) in enumerate(zip(episodes, steps)):
        ep = ds.load_episode(e)
        m = min(n, 500 - t)
        expected = sum(gamma ** i * ep["reward"][t + 1 + i] for i in range(m))
        assert batch["reward"][b] == pytest.approx(expected, rel=1e-5)
        assert batch["discount"][b] == pytest.approx(gamma ** m)
        np.testing.assert_array_equal(batch["action"][b], ep["action"][t + 1])
        rows = [max(0, r) for r in range(t - k + 1, t + 1)]
        stacked = np.concatenate([ep["image"][r].transpose(2, 0, 1) for r in rows])
        np.testing.assert_array_equal(batch["image"][b], stacked)
        next_rows = [max(0, r) for r in range(t + m - k + 1, t + m + 1)]
        np.testing.assert_array_equal(
            batch["next_image"][b], np.concatenate([ep["image"][r].transpose(2, 0, 1) for r in next_rows]))
        np.testing.assert_array_equal(batch["state"][b], ep["state"][t])
    # t = 499: one step left, so a 1-step return; t = 0: the reset frame repeated.
    assert batch["reward"][2] == pytest.approx(ds.load_episode(1)["reward"][500])
    random_batch = sampler.sample()
    assert random_batch["image"].shape == (32, 9, 64, 64)


def test_same_collection_twice_is_identical(tiny_dataset, tmp_path):
    """Seeding by (seed, episode index): a second collection gives the same files."""

    collect(CollectConfig(**{**TINY, "episodes": 1}), tmp_path / "again", progress=False)
    first = json.loads((tiny_dataset / "manifest.json").read_text())["episodes"][0]
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())["episodes"][0]
    assert first["sha256"] == again["sha256"]


def test_select_prefix_by_hand():
    from coworld_bench.data.collection import select_prefix

    returns = [0, 3, 3, 9, 12, 6, 15, 3]
    # Full windows of 2 only, means[j] = mean(returns[j:j+2]):
    #   j=0 (0+3)/2=1.5, j=1 (3+3)/2=3, j=2 (3+9)/2=6, j=3 (9+12)/2=10.5,
    #   j=4 (12+6)/2=9, j=5 (6+15)/2=10.5, j=6 (15+3)/2=9 -> best 10.5.
    # medium-replay: threshold 10.5/3 = 3.5, first reached at j=2 -> count 2+2 = 4.
    # medium-expert: threshold 10.5, first reached at j=3 -> count 3+2 = 5.
    # (The old rule's extra partial window, [0] -> 0, changed nothing here.)
    # Random actions return 0 here, so 1/3 of the way from random to best is best/3.
    assert select_prefix(returns, "medium-replay", 2, 0.0) == (4, 3.5, 10.5)
    assert select_prefix(returns, "medium-expert", 2, 0.0) == (5, 10.5, 10.5)
    # Window 1: means are the returns, best 15 at j=6 -> count 7.
    assert select_prefix(returns, "medium-expert", 1, 0.0) == (7, 15.0, 15.0)
    # Window 3: j=0 (0+3+3)/3=2, j=1 (3+3+9)/3=5, j=2 (3+9+12)/3=8, j=3 (9+12+6)/3=9,
    #   j=4 (12+6+15)/3=11, j=5 (6+15+3)/3=8 -> best 11.
    # medium-replay: threshold 11/3 = 3.67, first reached at j=1 (5) -> count 1+3 = 4.
    # medium-expert: threshold 11 at j=4 -> count 4+3 = 7.
    assert select_prefix(returns, "medium-replay", 3, 0.0) == (4, pytest.approx(11 / 3), 11.0)
    assert select_prefix(returns, "medium-expert", 3, 0.0) == (7, 11.0, 11.0)


def test_select_prefix_measures_from_random_actions_by_hand():
    from coworld_bench.data.collection import select_prefix

    # Random actions return 200 on this task (as on Button Press); the agent starts there.
    returns = [200, 210, 190, 300, 400, 500, 520]
    # Full windows of 2: j=0 205, j=1 200, j=2 245, j=3 350, j=4 450, j=5 510 -> best 510.
    # medium-replay: 1/3 of the way from 200 to 510 = 200 + 310/3 = 303.3, first reached
    #   at j=3 (350) -> count 3+2 = 5. (1/3 of the raw best, 170, is reached by the first
    #   window of random-level episodes: count 2.)
    assert select_prefix(returns, "medium-replay", 2, 200.0) == \
        (5, pytest.approx(200 + 310 / 3), 510.0)
    assert select_prefix(returns, "medium-replay", 2, 0.0)[0] == 2
    # medium-expert: the best itself, j=5 -> count 7, whatever random actions return.
    assert select_prefix(returns, "medium-expert", 2, 200.0) == (7, 510.0, 510.0)
    # An agent that never beats random actions (best 120 < 200): no level above random
    # exists, so its data runs to its best window (j=1 -> count 2), as for medium-expert.
    assert select_prefix([100, 120, 110], "medium-replay", 1, 200.0) == (2, 120.0, 120.0)


def test_select_prefix_ignores_a_lucky_first_episode():
    from coworld_bench.data.collection import select_prefix

    returns = [2000, 100, 100, 100, 100] + [5000] * 10
    # Full windows of 5: j=0 (2000+4*100)/5=480, j=1 (4*100+5000)/5=1080,
    #   j=2 (3*100+2*5000)/5=2060, j=3 (2*100+3*5000)/5=3040, j=4 (100+4*5000)/5=4020,
    #   j=5..10 5000 -> best 5000.
    # medium-replay: threshold 5000/3 = 1666.7, first reached at j=2 -> count 2+5 = 7.
    # (The old rule averaged the partial window [2000] and stopped at episode 1.)
    assert select_prefix(returns, "medium-replay", 5, 0.0) == \
        (7, pytest.approx(5000 / 3), 5000.0)
    # medium-expert: threshold 5000, first reached at j=5 -> count 5+5 = 10.
    assert select_prefix(returns, "medium-expert", 5, 0.0) == (10, 5000.0, 5000.0)


def test_select_prefix_keeps_at_least_a_full_window():
    from coworld_bench.data.collection import select_prefix

    rng = np.random.default_rng(0)
    for _ in range(500):
        window = int(rng.integers(1, 8))
        n = int(rng.integers(window, 30))
        returns = list(rng.exponential(100.0, n) * rng.integers(0, 2, n))
        random_return = float(rng.uniform(0, 150))
        for quality in ("medium-replay", "medium-expert"):
            count, threshold, best = select_prefix(returns, quality, window, random_return)
            assert window <= count <= n
            # The window that ends at count reaches the threshold and is a real window.
            assert np.mean(returns[count - window:count]) >= threshold
            assert best == max(np.mean(returns[j:j + window]) for j in range(n - window + 1))


def test_select_prefix_short_run_is_one_window():
    from coworld_bench.data.collection import select_prefix

    # 3 episodes, window 5: the whole run is the window, mean (1+2+6)/3 = 3; all kept.
    assert select_prefix([1, 2, 6], "medium-replay", 5, 0.0) == (3, 1.0, 3.0)
    assert select_prefix([1, 2, 6], "medium-expert", 5, 0.0) == (3, 3.0, 3.0)
    with pytest.raises(ValueError, match="at least one"):
        select_prefix([], "medium-replay", 5, 0.0)


def test_dreamerv2_behaviour_collects_a_prefix_of_its_training(tmp_path):
    """The paper's behaviour, tiny: a smoke-size DreamerV2 trains online on walker-walk."""
    config = CollectConfig(task_id="WW", quality="medium-expert", behaviour="dreamerv2",
                           episodes=3, window=1, agent_preset="smoke", reference_episodes=1,
                           env={"fast_render": True})
    manifest = collect(config, tmp_path / "dv2", progress=False)
    assert manifest["trained_episodes"] == 3 and manifest["behaviour"] == "dreamerv2"
    best = manifest["best_rolling_return"]
    # R_random measured (one episode of uniform random actions), R_ref = the best window.
    scale = manifest["returns"]
    assert scale["random_return"] > 0 and manifest["config"]["random_return"] == \
        scale["random_return"] and scale["reference_return"] == best
    returns = [e["return"] for e in manifest["episodes"]]
    assert returns[-1] == pytest.approx(best) and all(r < best for r in returns[:-1])
    verify_dataset(tmp_path / "dv2")
    assert not (tmp_path / "dv2" / ".behaviour-replay").exists()
    ds = Dataset(tmp_path / "dv2")
    assert ds.image_shape == (64, 64, 3) and ds.action_dim == 6


def test_collect_config_errors():
    with pytest.raises(ValueError, match="medium-replay, medium-expert"):
        CollectConfig(task_id="DC", quality="expert", behaviour="dreamerv2")
    with pytest.raises(ValueError, match="valid qualities"):
        CollectConfig(task_id="DC", quality="great")
    with pytest.raises(ValueError, match="Meta-World tasks only"):
        CollectConfig(task_id="WW", quality="medium-replay", behaviour="scripted")


def test_scripted_medium_replay_stops_at_threshold(tmp_path):
    # R_random 0 and R_ref small enough that the first episode already reaches 1/3.
    config = CollectConfig(task_id="BP", quality="medium-replay", behaviour="scripted",
                           episodes=4, seed=0, env={"fast_render": True}, window=1,
                           reference_return=3.0, random_return=0.0)
    manifest = collect(config, tmp_path / "mr", progress=False)
    assert manifest["episode_count"] == 1 and manifest["stop_reason"] == "threshold reached"
    assert manifest["threshold"] == pytest.approx(1.0)
    assert manifest["episodes"][0]["random_prob"] == 1.0  # annealing starts at 1
    assert len(list((tmp_path / "mr").glob("*.npz"))) == 1
    # Asking again is a no-op; asking with other settings is refused.
    assert collect(config, tmp_path / "mr", progress=False)["episode_count"] == 1
    other = CollectConfig(**{**config.__dict__, "seed": 1})
    with pytest.raises(DatasetError, match="seed"):
        collect(other, tmp_path / "mr", progress=False)

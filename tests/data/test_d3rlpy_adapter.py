"""The d3rlpy adapter picks exactly the transitions our TransitionSampler samples."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from coworld_bench.data import CollectConfig, Dataset, TransitionSampler, collect, write_episode
from coworld_bench.data.d3rlpy_adapter import (
    FrameEpisode, import_d3rlpy, to_replay_buffer, transition_batch,
)
from coworld_bench.data.format import episode_name, sha256_file

ACTION_DIM = 8  # wider than walker's 6: the adapter pads with zeros


@pytest.fixture(scope="module")
def ww_dataset(tmp_path_factory):
    """Two random Walker Walk episodes from the real simulator (500 steps each)."""
    out = tmp_path_factory.mktemp("d3rlpy-adapter") / "ww"
    collect(CollectConfig(task_id="WW", quality="random", episodes=2, seed=0,
                          env={"fast_render": True}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def terminal_dataset(ww_dataset, tmp_path_factory):
    """The same data with episode 1 cut to 5 steps ending in a real termination
    (is_terminal and discount 0 on its last row), written as a dataset."""
    out = tmp_path_factory.mktemp("d3rlpy-adapter") / "terminal"
    shutil.copytree(ww_dataset, out)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["episodes"][1]
    rows = Dataset(out).load_episode(1)
    cut = {k: v[:6].copy() for k, v in rows.items()}
    cut["is_last"][-1] = True
    cut["is_terminal"][-1] = True
    cut["discount"][-1] = 0.0
    (out / entry["file"]).unlink()
    entry["file"], entry["steps"] = episode_name(1, 5), 5
    write_episode(out / entry["file"], cut)
    entry["sha256"] = sha256_file(out / entry["file"])
    manifest["step_count"] = sum(e["steps"] for e in manifest["episodes"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def assert_same_transitions(dataset, frame_stack, episodes, steps):
    """Each (episode, step): the adapter's Transition (uint8 frames) and minibatch
    against TransitionSampler(n_step=1).sample(indices=...)."""
    buffer = to_replay_buffer(dataset, frame_stack, ACTION_DIM)
    episodes, steps = np.asarray(episodes), np.asarray(steps)
    ours = TransitionSampler(dataset, len(steps), n_step=1, frame_stack=frame_stack,
                             discount=0.99).sample(indices=(episodes, steps))
    native = dataset.action_dim
    for b, (e, t) in enumerate(zip(episodes, steps)):
        transition = buffer.transition_picker(buffer.episodes[e], int(t))
        assert transition.observation.dtype == np.uint8
        np.testing.assert_array_equal(transition.observation, ours["image"][b])
        np.testing.assert_array_equal(transition.next_observation, ours["next_image"][b])
        np.testing.assert_array_equal(transition.action[:native], ours["action"][b])
        np.testing.assert_array_equal(transition.action[native:], 0.0)
        assert transition.reward[0] == ours["reward"][b]
        assert transition.terminal == float(ours["discount"][b] == 0.0)
    batch = transition_batch(buffer, episodes, steps)
    np.testing.assert_array_equal(batch.observations, ours["image"].astype(np.float32))
    np.testing.assert_array_equal(batch.next_observations, ours["next_image"].astype(np.float32))
    np.testing.assert_array_equal(batch.actions[:, :native], ours["action"])
    np.testing.assert_array_equal(batch.rewards[:, 0], ours["reward"])
    np.testing.assert_array_equal(batch.terminals[:, 0], (ours["discount"] == 0.0))
    return batch


def test_transitions_equal_the_samplers_at_starts_ends_and_random_steps(ww_dataset):
    dataset = Dataset(ww_dataset)
    last = int(dataset.lengths[0]) - 1
    episodes = [0, 0, 0, 0, 1, 1, 1]
    steps = [0, 1, 2, last, 0, last - 1, last]
    random = TransitionSampler(dataset, 20, seed=3).sample_indices()
    batch = assert_same_transitions(dataset, 3, [*episodes, *random[0]], [*steps, *random[1]])
    assert batch.observations.shape == (27, 9, 64, 64)
    assert batch.actions.shape == (27, ACTION_DIM)
    assert not batch.terminals.any()  # walker episodes end by time limit only
    # The first step's stack is the reset frame three times.
    first = batch.observations[0].reshape(3, 3, 64, 64)
    np.testing.assert_array_equal(first[0], first[2])


def test_terminal_episode_keeps_its_last_frame_and_flags_the_last_step(terminal_dataset):
    dataset = Dataset(terminal_dataset)
    batch = assert_same_transitions(dataset, 4, [1, 1, 1, 1, 1, 0], [0, 1, 2, 3, 4, 499])
    np.testing.assert_array_equal(batch.terminals[:, 0], [0, 0, 0, 0, 1, 0])
    buffer = to_replay_buffer(dataset, 4, ACTION_DIM)
    assert buffer.transition_count == dataset.num_steps == 505
    assert buffer.episodes[1].terminated and not buffer.episodes[0].terminated
    with pytest.raises(IndexError):
        buffer.transition_picker(buffer.episodes[1], 5)


def test_buffer_holds_single_frames_and_d3rlpy_shapes(ww_dataset):
    dataset = Dataset(ww_dataset)
    buffer = to_replay_buffer(dataset, 3, ACTION_DIM)
    episode = buffer.episodes[0]
    assert isinstance(episode, FrameEpisode)
    assert episode.observations.shape == (501, 3, 64, 64)  # one copy of each frame
    assert episode.observations.dtype == np.uint8
    np.testing.assert_array_equal(episode.observations[7].transpose(1, 2, 0),
                                  dataset.read(0, "image", 7, 8)[0])
    assert episode.transition_count == 500 and len(buffer.episodes) == 2
    info = buffer.dataset_info
    assert info.action_size == ACTION_DIM
    assert info.action_space == import_d3rlpy().ActionSpace.CONTINUOUS
    assert tuple(buffer.sample_transition().observation.shape) == (9, 64, 64)


def test_d3rlpys_own_frame_stack_pads_with_zeros_which_ours_does_not(ww_dataset):
    """Why the adapter has its own picker: d3rlpy zero-pads at an episode's start."""
    from d3rlpy.dataset import FrameStackTransitionPicker

    buffer = to_replay_buffer(Dataset(ww_dataset), 3, ACTION_DIM)
    theirs = FrameStackTransitionPicker(3)(buffer.episodes[0], 0).observation
    ours = buffer.transition_picker(buffer.episodes[0], 0).observation
    assert not theirs[:6].any() and ours[:6].any()
    np.testing.assert_array_equal(theirs[6:], ours[6:])


def test_importing_the_benchmark_does_not_import_d3rlpy():
    code = ("import sys, coworld_bench, coworld_bench.data, coworld_bench.data.d3rlpy_adapter; "
            "assert 'd3rlpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_n_step_targets_by_hand_over_a_five_step_episode_with_a_terminal(terminal_dataset):
    """TransitionSampler(n_step=3), DrQ+BC's: step t sums the next rewards discounted,
    stops at the terminal (the window shrinks to the steps left) and bootstraps with
    gamma^3 times the product of the discounts it crossed (0 once the terminal is in)."""
    dataset = Dataset(terminal_dataset)
    rows = dataset.load_episode(1)  # 6 rows, 5 steps, terminal on row 5
    r, g = rows["reward"].astype(np.float64), 0.9
    sampler = TransitionSampler(dataset, 5, n_step=3, discount=g)
    batch = sampler.sample(indices=(np.ones(5, int), np.arange(5)))
    expected_reward = [r[1] + g * r[2] + g ** 2 * r[3],
                       r[2] + g * r[3] + g ** 2 * r[4],
                       r[3] + g * r[4] + g ** 2 * r[5],
                       r[4] + g * r[5],
                       r[5]]
    np.testing.assert_allclose(batch["reward"], expected_reward, rtol=1e-6)
    np.testing.assert_allclose(batch["discount"], [g ** 3, g ** 3, 0.0, 0.0, 0.0], rtol=1e-6)
    for t, last in enumerate([3, 4, 5, 5, 5]):  # next observation: the window's end
        np.testing.assert_array_equal(batch["next_image"][t],
                                      rows["image"][last].transpose(2, 0, 1))
        np.testing.assert_array_equal(batch["action"][t], rows["action"][t + 1])
    # An episode without a terminal (episode 0, 500 steps, a time limit): the last
    # steps bootstrap with gamma^m over the m < 3 rewards left.
    rows = dataset.load_episode(0)
    r, end = rows["reward"].astype(np.float64), dataset.lengths[0]
    batch = sampler.sample(indices=(np.zeros(2, int), np.array([end - 2, end - 1])))
    np.testing.assert_allclose(batch["reward"], [r[end - 1] + g * r[end], r[end]], rtol=1e-6)
    np.testing.assert_allclose(batch["discount"], [g ** 2, g], rtol=1e-6)

"""make() options: action padding, render speed, noisy targets, sparse sources."""

import numpy as np
import pytest

from coworld_bench import envs


def first_steps(env, actions):
    obs, _ = env.reset()
    out = [obs["image"]]
    rewards = []
    for a in actions:
        obs, r, *_ = env.step(a)
        out.append(obs["image"])
        rewards.append(r)
    return out, rewards


def test_padded_action_entries_are_ignored():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
    other = actions.copy()
    other[:, 4] = -other[:, 4] + 0.5
    a = first_steps(envs.make("BP", seed=2, action_dim=5, fast_render=True), actions)
    b = first_steps(envs.make("BP", seed=2, action_dim=5, fast_render=True), other)
    np.testing.assert_array_equal(a[0][-1], b[0][-1])
    assert a[1] == b[1]
    env = envs.make("BP", seed=2, action_dim=5)
    assert env.action_space.shape == (5,)
    with pytest.raises(ValueError, match="only be padded"):
        envs.make("PG", action_dim=4)


def test_fast_render_changes_pixels_not_dynamics():
    actions = np.random.default_rng(1).uniform(-1, 1, (2, 4)).astype(np.float32)
    slow = envs.make("DC", seed=4)
    fast = envs.make("DC", seed=4, fast_render=True)
    frames_s, rewards_s = first_steps(slow, actions)
    frames_f, rewards_f = first_steps(fast, actions)
    assert rewards_s == rewards_f
    assert not np.array_equal(frames_s[-1], frames_f[-1])
    assert slow.unwrapped.description["fast_render"] is False
    assert fast.unwrapped.description["fast_render"] is True


def test_antialias_off_changes_edges_not_dynamics():
    actions = np.random.default_rng(1).uniform(-1, 1, (2, 4)).astype(np.float32)
    smooth = envs.make("DC", seed=4, fast_render=True)
    hard = envs.make("DC", seed=4, fast_render=True, antialias=False)
    frames_s, rewards_s = first_steps(smooth, actions)
    frames_h, rewards_h = first_steps(hard, actions)
    assert rewards_s == rewards_h
    # Same scene: most pixels agree; the edges, where multisampling blends, differ.
    same = (frames_s[-1] == frames_h[-1]).all(-1).mean()
    assert 0.3 < same < 1.0
    assert smooth.unwrapped.description["antialias"] is True
    assert hard.unwrapped.description["antialias"] is False
    assert smooth.unwrapped._camera._renderer._mjr_context.offSamples == 4
    assert hard.unwrapped._camera._renderer._mjr_context.offSamples == 0


def test_action_noise_is_seeded_and_changes_outcome():
    actions = np.zeros((3, 4), np.float32)
    clean = first_steps(envs.make("BP", seed=5, fast_render=True), actions)
    noisy_a = first_steps(envs.make("BP", seed=5, fast_render=True, action_noise=0.5), actions)
    noisy_b = first_steps(envs.make("BP", seed=5, fast_render=True, action_noise=0.5), actions)
    assert noisy_a[1] == noisy_b[1]
    assert noisy_a[1] != clean[1]


@pytest.mark.parametrize("task_id", ["BP", "PG"])
def test_sparse_reward_is_success(task_id):
    env = envs.make(task_id, seed=0, sparse_reward=True, fast_render=True)
    env.reset()
    for _ in range(3):
        _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert reward == float(info["success"])
        assert info["dense_reward"] > 0  # the dense signal is kept beside it
    with pytest.raises(ValueError, match="success"):
        envs.make("WW", sparse_reward=True)


def test_moving_background_moves_and_is_seeded():
    def frames(seed):
        env = envs.make("CR", seed=seed, moving_background=True, fast_render=True)
        return first_steps(env, np.zeros((3, 6), np.float32))[0]

    plain = first_steps(envs.make("CR", seed=1, fast_render=True), np.zeros((3, 6), np.float32))[0]
    a, b = frames(1), frames(1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], plain[0])
    # The sky (top rows) changes between frames while the body barely moves.
    sky = [f[:8] for f in a]
    assert not np.array_equal(sky[0], sky[1])
    with pytest.raises(ValueError, match="DMC"):
        envs.make("BP", moving_background=True)

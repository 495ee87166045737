"""Every task id on its real simulator: reset, step, images, seeding."""

import numpy as np
import pytest

from coworld_bench import envs
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import TASKS, UnknownTaskError

IDS = [t.id for t in TASKS]


def rollout(task_id, seed, steps, **options):
    env = envs.make(task_id, seed=seed, **options)
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    frames, rewards = [obs["image"]], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(
            rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        frames.append(obs["image"])
        rewards.append(reward)
    env.close()
    return env, frames, rewards, obs


@pytest.mark.parametrize("task_id", IDS)
def test_reset_step_images(task_id):
    env, frames, rewards, last = rollout(task_id, seed=3, steps=3)
    task = env.unwrapped.task
    assert env.action_space.shape == (task.action_dim,)
    for frame in frames:
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert frame.std() > 5  # a real picture, not a blank buffer
    for a, b in zip(frames, frames[1:]):
        assert not np.array_equal(a, b), "consecutive frames are identical"
    assert all(np.isfinite(rewards))
    assert last["state"].dtype == np.float32 and last["state"].shape == (env.unwrapped.state_dim,)
    assert not last["is_first"] and not last["is_last"] and not last["is_terminal"]
    assert env.observation_space["image"].contains(frames[0])


@pytest.mark.parametrize("task_id", IDS)
def test_same_seed_same_episode_other_seed_differs(task_id):
    _, frames_a, rewards_a, _ = rollout(task_id, seed=7, steps=2, fast_render=True)
    _, frames_b, rewards_b, _ = rollout(task_id, seed=7, steps=2, fast_render=True)
    _, frames_c, _, _ = rollout(task_id, seed=8, steps=2, fast_render=True)
    np.testing.assert_array_equal(frames_a[0], frames_b[0])
    np.testing.assert_array_equal(frames_a[-1], frames_b[-1])
    assert rewards_a == rewards_b
    assert not np.array_equal(frames_a[0], frames_c[0]), "reset is not randomised by the seed"


def test_reset_with_seed_reseeds():
    env = envs.make("DC", seed=1, fast_render=True)
    first = env.reset(seed=11)[0]["image"]
    env.reset()
    again = env.reset(seed=11)[0]["image"]
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("task_id", ["mw-drawer-close", "rd-open-slide", "dmc-cheetah-run"])
def test_episode_length_and_flags(task_id):
    env = envs.make(task_id, seed=0, fast_render=True)
    obs, _ = env.reset()
    assert obs["is_first"] and not obs["is_last"]
    steps, truncated = 0, False
    action = np.zeros(env.action_space.shape, np.float32)
    while not truncated:
        obs, _, terminated, truncated, _ = env.step(action)
        steps += 1
        assert not terminated
    assert steps == env.unwrapped.task.episode_steps == 500
    assert obs["is_last"] and not obs["is_terminal"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)


def test_unknown_task_lists_valid_ids():
    with pytest.raises(UnknownTaskError) as err:
        envs.make("nonexistent")
    for task_id in IDS:
        assert task_id in str(err.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="fast_render"):
        envs.make("BP", shadows=False)


def test_description_records_every_option():
    env = envs.make("BP", seed=0, fast_render=True, action_dim=5)
    desc = env.unwrapped.description
    assert desc["task_id"] == "mw-button-press" and desc["camera"] == "corner"
    assert desc["fast_render"] is True and desc["action_dim"] == 5
    assert desc["native_action_dim"] == 4 and desc["episode_steps"] == 500

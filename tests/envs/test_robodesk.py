"""The RoboDesk adapter is faithful to RoboDesk's own rendering and seeding."""

import numpy as np

from coworld_bench import envs
from coworld_bench.envs.robodesk import import_robodesk


def test_frames_equal_robodesks_own_render():
    env = envs.make("OS", seed=0)
    obs, _ = env.reset()
    sim = env.unwrapped._env
    robodesk = import_robodesk()
    own = robodesk.RoboDesk.render(sim, resize=True)  # RoboDesk's own camera code
    assert own.shape == obs["image"].shape
    diff = np.abs(own.astype(int) - obs["image"].astype(int))
    assert diff.mean() < 1.0, diff.mean()


def test_reset_leaves_global_numpy_random_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    env = envs.make("PG", seed=0, fast_render=True)
    env.reset()
    assert np.random.random() == expected


def test_success_flag_reported():
    env = envs.make("OD", seed=0, fast_render=True)
    env.reset()
    _, _, _, _, info = env.step(np.zeros(5, np.float32))
    assert info["success"] is False

"""RoboDesk tasks behind the gymnasium interface (SPEC section 2).

RoboDesk 1.0.0 (PyPI) speaks the old gym API and resizes its images with
``PIL.Image.ANTIALIAS``, which Pillow 10 removed. It is wrapped here, never made
through ``gym.make``: the Pillow name is restored as an alias of LANCZOS (the same
filter), and frames are rendered by the shared renderer from RoboDesk's own camera
parameters (distance 1.8, azimuth 90, elevation -60, look-at (0, 0.535, 1.1), 120px,
cropped to (16.75, 25, 105, 88.75), LANCZOS-resized), so ``fast_render`` works here
too. ``tests/envs/test_robodesk.py`` checks these frames equal RoboDesk's own.

Settings: ``reward='dense'``, action repeat 1, 500 steps, 5-d action, 64px. RoboDesk
reports no success in ``info``; the task's own ``success`` reward type is used.
RoboDesk draws its reset randomness from numpy's global generator; the adapter swaps
in a private, seeded state around each reset so the global state is untouched.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from coworld_bench.envs.base import BenchmarkEnv, EnvOptions
from coworld_bench.envs.render import Camera
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import TaskSpec

# RoboDesk's fixed view (robodesk.RoboDesk.render).
VIEW = {"distance": 1.8, "azimuth": 90.0, "elevation": -60.0, "lookat": (0.0, 0.535, 1.1)}
RAW_SIZE = 120
CROP_BOX = (16.75, 25.0, 105.0, 88.75)


def import_robodesk():
    """Imports robodesk with the Pillow shim in place."""
    if not hasattr(Image, "ANTIALIAS"):
        Image.ANTIALIAS = Image.LANCZOS  # removed in Pillow 10; the same filter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old gym's import-time deprecation chatter
        import robodesk

    return robodesk


def _free_camera():
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance = VIEW["distance"]
    cam.azimuth = VIEW["azimuth"]
    cam.elevation = VIEW["elevation"]
    cam.lookat[:] = VIEW["lookat"]
    return cam


class RoboDeskEnv(BenchmarkEnv):
    def __init__(self, task: TaskSpec, options: EnvOptions, seed: int | None = None):
        if options.moving_background:
            raise ConfigError("moving_background is a DMC setting; the paper's noisy RoboDesk "
                             "targets use action_noise instead.")
        if options.camera not in (None, "default"):
            raise ConfigError("RoboDesk has one fixed view; camera must be left unset.")
        robodesk = import_robodesk()
        self._env = robodesk.RoboDesk(task=task.sim_task, reward="dense", action_repeat=1,
                                      episode_length=task.episode_steps,
                                      image_size=options.image_size)
        self._image_size = options.image_size
        self._camera = Camera(self._env.physics.model.ptr, RAW_SIZE, _free_camera(),
                              fast=options.fast_render, antialias=options.antialias)
        # RoboDesk renders inside its own step/reset; route that through our camera.
        self._env.render = self._render_view
        self.camera_name = "default"
        physics = self._env.physics
        self.state_dim = int(physics.model.nq + physics.model.nv)
        self._rng_state = None
        self._image = None
        super().__init__(task, options, seed)

    def _render_view(self, mode="rgb_array", resize=True):
        image = self._camera.render(self._env.physics.data.ptr)
        if resize:
            image = Image.fromarray(image).crop(box=CROP_BOX)
            image = np.asarray(image.resize([self._image_size] * 2, resample=Image.LANCZOS))
        return image

    def _state(self):
        data = self._env.physics.data
        return np.concatenate([data.qpos, data.qvel])

    def _success(self) -> bool:
        return bool(self._env._get_task_reward(self.task.sim_task, "success"))

    def _sim_seed(self, seed):
        self._rng_state = np.random.RandomState(seed).get_state()

    def _sim_reset(self):
        outer = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            obs = self._env.reset()
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(outer)
        self._image = obs["image"]
        return self._state(), {"success": False}

    def _sim_step(self, action):
        obs, reward, _, _ = self._env.step(action)
        self._image = obs["image"]
        # Episodes end by the time limit only (truncation), never by termination.
        return reward, False, self._state(), {"success": self._success()}

    def _sim_render(self):
        return self._image

    def close(self):
        self._camera.close()

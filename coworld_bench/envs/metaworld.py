"""Meta-World v3 tasks (SPEC section 2).

Settings: camera ``corner`` (as in the CoWorld authors' code; ``corner4`` is
metaworld 3.x's copy of their patched ``corner2``), object and goal positions
randomised at every reset, 500 steps, action repeat 1, 4-d action, the dense
reward of ``reward_function_version="v2"`` (metaworld's default, the paper's).
"""

from __future__ import annotations

import numpy as np

from coworld_bench.envs.base import BenchmarkEnv, EnvOptions
from coworld_bench.envs.render import Camera
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import TaskSpec

DEFAULT_CAMERA = "corner"


class MetaWorldEnv(BenchmarkEnv):
    def __init__(self, task: TaskSpec, options: EnvOptions, seed: int | None = None):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        if options.moving_background:
            raise ConfigError("moving_background is a DMC setting; the paper's noisy Meta-World "
                             "targets use action_noise instead.")
        cls = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task.sim_task}-goal-observable"]
        # The seed given here only fixes metaworld's constructor; _sim_seed seeds resets.
        self._env = cls(seed=0 if seed is None else seed)
        # Re-draw object and goal positions at every reset, from the env's own seeded
        # generator (not numpy's global one), so runs are reproducible.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        assert self._env.max_path_length == task.episode_steps
        self.camera_name = options.camera or DEFAULT_CAMERA
        names = [self._env.model.camera(i).name for i in range(self._env.model.ncam)]
        if self.camera_name not in names:
            raise ConfigError(f"Unknown Meta-World camera {self.camera_name!r}; "
                             f"valid cameras: {', '.join(names)}.")
        self._camera = Camera(self._env.model, options.image_size, self.camera_name,
                              fast=options.fast_render, flip=True,
                              antialias=options.antialias)
        self.state_dim = int(self._env.observation_space.shape[0])
        super().__init__(task, options, seed)

    def _sim_seed(self, seed):
        if seed is not None:
            self._env.seed(int(seed))

    def _sim_reset(self):
        state, _ = self._env.reset()
        return state, {"success": False}

    def _sim_step(self, action):
        state, reward, terminated, _, info = self._env.step(action)
        return reward, bool(terminated), state, {"success": bool(info["success"])}

    def _sim_render(self):
        return self._camera.render(self._env.data)

    def close(self):
        self._camera.close()
        self._env.close()


def scripted_policy(task: TaskSpec):
    """Meta-World's own scripted policy for a task, as ``obs dict -> action``.

    It reads the 39-d simulator state (``obs["state"]``). These policies succeed on
    all six benchmark tasks but do not maximise the dense reward (they press with the
    gripper open), so quality thresholds for scripted data are relative to their own
    return.
    """
    from metaworld.policies import ENV_POLICY_MAP

    if task.suite != "metaworld":
        raise ConfigError(f"Scripted policies exist for Meta-World tasks only, not {task.id}.")
    policy = ENV_POLICY_MAP[task.sim_task]()
    return lambda obs: np.asarray(policy.get_action(obs["state"]), dtype=np.float32)

"""Wrappers for the paper's extra settings: noisy targets and sparse sources."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from coworld_bench.errors import ConfigError

__all__ = ["GaussianActionNoise", "SparseReward"]


class GaussianActionNoise(gym.ActionWrapper):
    """Adds N(0, std^2) to every action before it is executed (paper: noisy MW/RoboDesk
    targets). The base env clips the noisy action to [-1, 1]."""

    def __init__(self, env: gym.Env, std: float, seed: int | None = None):
        super().__init__(env)
        if std < 0:
            raise ConfigError(f"action_noise must be >= 0, got {std}.")
        self.std = float(std)
        self._rng = np.random.default_rng(None if seed is None else [seed, 1])

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng([seed, 1])
        return self.env.reset(seed=seed, options=options)

    def action(self, action):
        action = np.asarray(action, dtype=np.float32)
        return action + self._rng.normal(0.0, self.std, size=action.shape).astype(np.float32)


class SparseReward(gym.Wrapper):
    """Reward 1 on a step whose ``info['success']`` is true, else 0 (paper: sparse
    source reward). The dense reward stays available as ``info['dense_reward']``."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "dense_reward": reward}
        return obs, float(bool(info["success"])), terminated, truncated, info

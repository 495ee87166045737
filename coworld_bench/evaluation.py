"""The evaluation protocol (SPEC section 2) and the value-estimate trace (fig. 5b).

Score = undiscounted sum of environment rewards over one episode; an evaluation
point = ``episodes`` episodes with the deterministic policy. Episode ``j`` of
evaluation point ``i`` is seeded from ``(run seed, i, j)``, so evaluations repeat
exactly.

Value trace: along the same real episodes, the algorithm's critic value of every
visited state (``Algorithm.value`` after ``policy`` has taken in the observation,
i.e. the posterior state for world-model agents) beside the true discounted return
from that step, ``G_t = sum_k discount^k r_{t+1+k}``, with no bootstrap at the end.
Algorithms without a critic get NaN values; rewards and returns are still recorded.
``seconds_per_episode`` (wall time of policy + simulator, value trace included) feeds
the report's training-time table.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from coworld_bench.seeding import derive_seed

EVAL_STREAM = 1_000_003  # separates evaluation seeds from every other use of the seed
RANDOM_ACTION_STREAM = 1_000_033  # the random-action baseline's actions


def eval_seed(seed: int, eval_index: int, episode: int) -> int:
    """The reset seed of episode ``episode`` of evaluation point ``eval_index``."""
    return derive_seed(seed, EVAL_STREAM, eval_index, episode)


def discounted_returns(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = r_{t+1} + discount * G_{t+1}, G after the last step = 0. ``rewards[t]`` is
    the reward of the step taken from state t."""
    out = np.zeros(len(rewards), np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + discount * acc
        out[t] = acc
    return out


def evaluate(algorithm, env, episodes: int, seed: int, eval_index: int,
             record_values: bool = False, discount: float = 0.99, progress=None
             ) -> dict[str, Any]:
    returns, successes, values, rewards = [], [], [], []
    start = time.perf_counter()
    for j in range(episodes):
        obs, _ = env.reset(seed=eval_seed(seed, eval_index, j))
        state = algorithm.initial_state()
        total, success, done = 0.0, False, False
        ep_values, ep_rewards = [], []
        while not done:
            action, state = algorithm.policy(obs, state, deterministic=True)
            if record_values:
                value = algorithm.value(obs, state)
                ep_values.append(np.nan if value is None else float(value))
            obs, reward, terminated, truncated, info = env.step(action)
            ep_rewards.append(reward)
            total += reward
            success = success or bool(info.get("success", False))
            done = terminated or truncated
        returns.append(total)
        successes.append(success)
        if record_values:
            values.append(ep_values)
            rewards.append(ep_rewards)
        if progress is not None:
            progress.update(1)
    result = {"returns": [float(r) for r in returns], "success": successes,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)),
              "seconds_per_episode": (time.perf_counter() - start) / episodes}
    if record_values:
        value = np.array(values, np.float64)
        reward = np.array(rewards, np.float64)
        true = np.stack([discounted_returns(r, discount) for r in reward])
        result["trace"] = {"value": value, "reward": reward, "discounted_return": true}
    return result


def random_action_returns(task: str, episodes: int, seed: int = 0, eval_index: int = 1,
                          **env_options) -> list[float]:
    """Returns of uniformly random actions on the evaluation seeds of ``eval_index`` (1:
    the final evaluation of a run with ``eval_every=0``): the baseline a learning check
    compares with."""
    from coworld_bench import envs

    env = envs.make(task, seed=seed, **{"fast_render": True, **env_options})
    rng = np.random.default_rng(derive_seed(seed, RANDOM_ACTION_STREAM, eval_index))
    out = []
    for j in range(episodes):
        env.reset(seed=eval_seed(seed, eval_index, j))
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(
                rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            total += reward
            done = terminated or truncated
        out.append(float(total))
    env.close()
    return out

"""The evaluation protocol (SPEC section 2) and the value-estimate trace (fig. 5b).

Score = undiscounted sum of environment rewards over one episode; an evaluation
point = ``episodes`` episodes with the deterministic policy. Episode ``j`` of
evaluation point ``i`` is seeded from ``(run seed, i, j)``, so evaluations repeat
exactly. The deterministic policy still draws random numbers where the algorithm
samples (DreamerV2 samples the posterior latent when acting): each episode draws
from its own torch random state, seeded from the same triple, so an episode's score
does not depend on how many episodes run side by side, nor on anything the run did
before, and evaluating leaves the run's random state as it was.

Value trace: along the same real episodes, the algorithm's critic value of every
visited state (``Algorithm.value`` after ``policy`` has taken in the observation,
i.e. the posterior state for world-model agents) beside the true discounted return
from that step, ``G_t = sum_k discount^k r_{t+1+k}``, with no bootstrap at the end.
Algorithms without a critic get NaN values; rewards and returns are still recorded.
``seconds_per_episode`` (wall time of policy + simulator, value trace included) feeds
the report's training-time table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from coworld_bench.seeding import derive_seed

EVAL_STREAM = 1_000_003  # separates evaluation seeds from every other use of the seed
RANDOM_ACTION_STREAM = 1_000_033  # the random-action baseline's actions
POLICY_STREAM = 1_000_037  # the policy's own draws during an evaluation episode


def eval_seed(seed: int, eval_index: int, episode: int) -> int:
    """The reset seed of episode ``episode`` of evaluation point ``eval_index``."""
    return derive_seed(seed, EVAL_STREAM, eval_index, episode)


def policy_seed(seed: int, eval_index: int, episode: int) -> int:
    """The seed of that episode's own random state for the policy's draws."""
    return derive_seed(seed, POLICY_STREAM, eval_index, episode)


def discounted_returns(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = r_{t+1} + discount * G_{t+1}, G after the last step = 0. ``rewards[t]`` is
    the reward of the step taken from state t."""
    out = np.zeros(len(rewards), np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + discount * acc
        out[t] = acc
    return out


class EpisodeRandomState:
    """The torch random state of one evaluation episode (CPU, plus ``device``'s when it
    is a GPU): ``with state.active():`` the code inside draws from it, and the global
    random state is restored on leaving."""

    def __init__(self, seed: int, device=None):
        import torch

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cpu = torch.Generator().manual_seed(seed).get_state()
        self.gpu = (torch.Generator(self.device).manual_seed(seed).get_state()
                    if self.device.type == "cuda" else None)

    @contextlib.contextmanager
    def active(self):
        import torch

        cuda = self.gpu is not None
        with torch.random.fork_rng(devices=[self.device] if cuda else [],
                                   device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if cuda:
                torch.cuda.set_rng_state(self.gpu, self.device)
            yield
            self.cpu = torch.get_rng_state()
            if cuda:
                self.gpu = torch.cuda.get_rng_state(self.device)


class _Episode:
    """One evaluation episode in progress (its policy state, random state, what it
    recorded)."""

    def __init__(self, index: int, obs, algorithm, seed: int):
        self.index, self.obs = index, obs
        self.random = EpisodeRandomState(seed, getattr(getattr(algorithm, "ctx", None),
                                                       "device", None))
        with self.random.active():
            self.state = algorithm.initial_state()
        self.total, self.success, self.done = 0.0, False, False
        self.values: list[float] = []
        self.rewards: list[float] = []
        self.predicted: list[float] = []  # the reward model's, of arriving at each obs

    def act(self, algorithm, record_values: bool):
        with self.random.active():
            action, self.state = algorithm.policy(self.obs, self.state, deterministic=True)
            if record_values:
                value = algorithm.value(self.obs, self.state)
                self.values.append(np.nan if value is None else float(value))
            predicted = algorithm.predicted_reward(self.obs, self.state)
            self.predicted.append(np.nan if predicted is None else float(predicted))
        return action

    def take(self, obs, reward, terminated, truncated, info) -> None:
        self.obs = obs
        self.rewards.append(reward)
        self.total += reward
        self.success = self.success or bool(info.get("success", False))
        self.done = terminated or truncated


@contextlib.contextmanager
def acting_threads():
    """One intra-op CPU thread inside: acting on one observation at a time gains
    nothing from a second (CoWorld, DrQ+BC and CURL at the quick size: the same ms
    per act with 1 or 2), whose OpenMP spin-waiting takes the cores the evaluation
    simulators need (3 CoWorld episodes side by side on 2 cores: 20.4 s with 2
    threads, 14.7 s with 1). The previous setting is restored on leaving."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def evaluate(algorithm, env, episodes: int, seed: int, eval_index: int,
             record_values: bool = False, discount: float = 0.99, progress=None,
             workers: "EnvWorkers | None" = None) -> dict[str, Any]:
    """``workers``: simulators in worker processes; the episodes then run side by side
    (the policy acting for each in turn while the others' simulators step), with the
    same seeds and so the same results as one after another in ``env``."""
    start = time.perf_counter()
    with acting_threads():
        if workers is not None and episodes > 1 and workers.size > 1:
            finished = _evaluate_parallel(algorithm, workers, episodes, seed, eval_index,
                                          record_values, progress)
        else:
            finished = []
            for j in range(episodes):
                obs, _ = env.reset(seed=eval_seed(seed, eval_index, j))
                episode = _Episode(j, obs, algorithm, policy_seed(seed, eval_index, j))
                while not episode.done:
                    episode.take(*env.step(episode.act(algorithm, record_values)))
                finished.append(episode)
                if progress is not None:
                    progress.update(1)
    returns = [e.total for e in finished]
    successes = [e.success for e in finished]
    values = [e.values for e in finished]
    rewards = [e.rewards for e in finished]
    result = {"returns": [float(r) for r in returns], "success": successes,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)),
              "seconds_per_episode": (time.perf_counter() - start) / episodes,
              **reward_model_check(finished)}
    if record_values:
        value = np.array(values, np.float64)
        reward = np.array(rewards, np.float64)
        true = np.stack([discounted_returns(r, discount) for r in reward])
        result["trace"] = {"value": value, "reward": reward, "discounted_return": true}
    return result


def reward_model_check(episodes: list[_Episode]) -> dict[str, float]:
    """What the policy earned per step and, for an agent with a reward model, what
    that model predicts on the same real steps: ``reward_per_step`` (mean simulator
    reward), ``predicted_reward_per_step`` and ``reward_error`` (mean absolute error of
    the prediction at the state after each observation against the reward that came
    with it; the reset observation has none). These are held-out real target steps:
    no offline learner trains on its evaluation episodes."""
    earned = np.concatenate([np.asarray(e.rewards, np.float64) for e in episodes])
    out = {"reward_per_step": float(earned.mean()) if earned.size else float("nan")}
    # act() k >= 1 saw the observation that came with reward k - 1.
    predicted = np.concatenate([np.asarray(e.predicted[1:len(e.rewards)], np.float64)
                                for e in episodes])
    true = np.concatenate([np.asarray(e.rewards[:len(e.predicted) - 1], np.float64)
                           for e in episodes])
    if predicted.size and np.isfinite(predicted).all():
        out["predicted_reward_per_step"] = float(predicted.mean())
        out["reward_error"] = float(np.abs(predicted - true).mean())
    return out


def _evaluate_parallel(algorithm, workers: "EnvWorkers", episodes: int, seed: int,
                       eval_index: int, record_values: bool, progress) -> list[_Episode]:
    pending = list(range(episodes))
    running: dict[int, _Episode] = {}  # worker -> its episode
    finished: list[_Episode] = []

    def start(worker: int) -> None:
        j = pending.pop(0)
        obs, _ = workers.call(worker, "reset", seed=eval_seed(seed, eval_index, j))
        running[worker] = _Episode(j, obs, algorithm, policy_seed(seed, eval_index, j))

    for worker in range(min(workers.size, episodes)):
        start(worker)
    while running:
        # Each simulator steps while the policy acts for the next episode.
        for worker, episode in running.items():
            workers.send(worker, "step", episode.act(algorithm, record_values))
        for worker in list(running):
            episode = running[worker]
            episode.take(*workers.receive(worker))
            if episode.done:
                finished.append(running.pop(worker))
                if progress is not None:
                    progress.update(1)
                if pending:
                    start(worker)
    return sorted(finished, key=lambda e: e.index)


def receive_reply(pipe, process, name: str):
    """A worker process's ``(ok, value)`` reply: ``value``, or a RuntimeError naming
    ``name`` when the worker reported an error or died."""
    try:
        ok, value = pipe.recv()
    except EOFError:
        raise RuntimeError(f"{name} died (exit code {process.exitcode}).") from None
    if not ok:
        raise RuntimeError(f"{name}: {value}")
    return value


def _env_worker(pipe, make_env) -> None:
    env = make_env()
    pipe.send((True, "ready"))
    try:
        while True:
            command, args, kwargs = pipe.recv()
            if command == "close":
                break
            try:
                pipe.send((True, getattr(env, command)(*args, **kwargs)))
            except Exception as e:  # noqa: BLE001 - reported to the caller
                pipe.send((False, f"{type(e).__name__}: {e}"))
    finally:
        env.close()


class EnvWorkers:
    """``size`` copies of an environment, each in its own process (``make_env``: a
    picklable function making one), for evaluation episodes side by side."""

    def __init__(self, make_env, size: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.size = size
        self.pipes, self.processes = [], []
        self._started = [False] * size  # each worker's "ready" message received
        for _ in range(size):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_env_worker, args=(child, make_env), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def send(self, worker: int, command: str, *args, **kwargs) -> None:
        self.pipes[worker].send((command, args, kwargs))

    def ready(self) -> bool:
        """Whether every worker has made its environment (without waiting)."""
        for worker, pipe in enumerate(self.pipes):
            if not self._started[worker] and pipe.poll():
                self._await_start(worker)
        return all(self._started)

    def _await_start(self, worker: int) -> None:
        if not self._started[worker]:
            receive_reply(self.pipes[worker], self.processes[worker],
                          f"Evaluation worker {worker} (starting)")
            self._started[worker] = True

    def receive(self, worker: int):
        self._await_start(worker)
        return receive_reply(self.pipes[worker], self.processes[worker],
                             f"Evaluation worker {worker}")

    def call(self, worker: int, command: str, *args, **kwargs):
        self.send(worker, command, *args, **kwargs)
        return self.receive(worker)

    def close(self) -> None:
        for pipe, process in zip(self.pipes, self.processes):
            try:
                pipe.send(("close", (), {}))
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self.pipes, self.processes = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def random_action_returns(task: str, episodes: int, seed: int = 0, eval_index: int = 1,
                          **env_options) -> list[float]:
    """Returns of uniformly random actions on the evaluation seeds of ``eval_index`` (1:
    the final evaluation of a run with ``eval_every=0``): the baseline a learning check
    compares with."""
    from coworld_bench import envs

    # Rewards do not depend on the pixels: the cheapest rendering unless told otherwise.
    env = envs.make(task, seed=seed, **{"fast_render": True, "antialias": False, **env_options})
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


RANDOM_CACHE_VERSION = 1


def random_action_baseline(task: str, episodes: int, seed: int, eval_index: int,
                           cache_dir: str | Path | None = None, **env_options) -> dict[str, Any]:
    """``random_action_returns`` summarised (mean, std, returns), computed once per
    task, env options, run seed, evaluation point and episode count and kept as JSON
    in ``cache_dir`` (e.g. the data root), so that every run on the same evaluation
    seeds reads the same numbers. ``cached`` says whether they were read back."""
    from coworld_bench.data.format import atomic_write_json

    key = {"version": RANDOM_CACHE_VERSION, "task": task, "episodes": int(episodes),
           "seed": int(seed), "eval_index": int(eval_index),
           "env_options": {k: env_options[k] for k in sorted(env_options)}}
    path = None
    if cache_dir is not None:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{task}-seed{seed}-{digest}.json"
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                return {**stored["result"], "cached": True}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # absent or unreadable: computed again and rewritten
    returns = random_action_returns(task, episodes, seed=seed, eval_index=eval_index,
                                    **env_options)
    result = {"mean": float(np.mean(returns)), "std": float(np.std(returns)),
              "returns": returns}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"key": key, "result": result})
    return {**result, "cached": False}

"""Collecting offline datasets from the real simulators.

Qualities (SPEC section 3):

- ``medium-replay``: everything a behaviour agent produced from the start of its
  training until it first reaches the medium level, 1/3 of the best return it
  reaches.
- ``medium-expert``: the same, until it reaches its best return.
- ``expert``: the converged behaviour only; ``random``: uniform random actions.

"1/3 of the best" is measured from uniform random actions, not from zero: with
``R_random`` the mean return of uniformly random actions on the task and ``R_ref``
the best return, a return ``R`` is at the normalised level

    (R - R_random) / (R_ref - R_random),

0 at random, 1 at the best, and the medium level is 1/3 of the way from random to
the best (threshold ``R_random + (R_ref - R_random) / 3``). On Meta-World random
actions earn a large part of the best return (Button Press: ~200-250 of the scripted
policy's 565), so a third of the raw return is reached by random data alone.
``R_random`` is measured on ``random_episodes`` episodes of uniform random
actions (``random_return``, measured if None), seeded independently of the data.

Behaviours:

- ``dreamerv2``: the paper's definition. A DreamerV2 agent (the ``dreamerv2``
  algorithm, preset ``agent_preset``) trains online on the task for ``episodes``
  episodes, every episode it plays streamed to disk. Its best score ``R_ref`` is the
  best mean return over ``window`` consecutive training episodes (full windows
  only); the dataset keeps the episodes from the first one until the end of the
  first window whose normalised mean reaches 1/3 (medium-replay) or 1 (medium-expert,
  the best itself); see ``select_prefix``. Such a collection restarts from the
  beginning if interrupted (the agent is not checkpointed here).
- ``scripted``: a fast approximation for Meta-World, standing in for the replay of
  an agent that learns: at every step of episode ``i`` the action is, with
  probability ``p_i``, uniform random in [-1, 1]^d, else the task's scripted
  policy's. ``p_i`` is annealed linearly from ``random_start`` (1: random-level
  episodes first) at episode 0 to ``random_end`` (0) at the end of the episode
  budget, so returns rise from random level towards the scripted policy's. (Gaussian
  action noise does not do this: the scripted policies correct it and score
  near-expert even at std 1.) ``R_ref`` is the pure scripted policy's own return
  (``reference_return``, measured if None): these policies solve every task but do
  not maximise the dense reward, so thresholds are relative to them. Collection stops
  after the first episode (at least ``window`` in) at which the normalised mean
  return of the last ``window`` episodes reaches 1/3 (medium-replay) or 0.9
  (medium-expert, "its maximum" read as 90% of the way). ``expert`` is the pure
  scripted policy.
- ``random``: uniform random actions.

Each manifest records the range of its episodes' returns (mean, min, max) with the
``R_random`` and ``R_ref`` used and the same range normalised (``returns``).

Every episode ``i`` is seeded from ``(seed, i)`` alone, so a dataset does not depend
on the number of worker processes, and an interrupted collection resumes where it
stopped: episode files and the manifest are written atomically, and files an
interrupted run left outside the manifest are regenerated.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from coworld_bench import __version__
from coworld_bench.data.format import (
    FORMAT_VERSION, MANIFEST, DatasetError, atomic_write_json, episode_name, sha256_file,
    write_episode,
)
from coworld_bench.data import behaviours
from coworld_bench.errors import ConfigError
from coworld_bench.seeding import derive_seed
from coworld_bench.tasks import resolve_task

# Held by the process collecting into a dataset folder (see ``collect``).
COLLECT_LOCK = ".collect.lock"

QUALITIES = ("random", "medium-replay", "medium-expert", "expert")
# Behaviours of the data layer itself; learning ones (the paper's dreamerv2) are
# registered entries (``coworld_bench.data.behaviours``).
BEHAVIOURS = ("dreamerv2", "scripted", "random")
BUILT_IN = ("scripted", "random")
# Normalised levels, (R - R_random) / (R_ref - R_random), at which the scripted
# behaviour stops; the learning behaviours keep up to 1/3 and 1 of their best.
THRESHOLDS = {"medium-replay": 1.0 / 3.0, "medium-expert": 0.9}
# Seeds of the reference episodes (R_ref, R_random) are derived under this key, apart
# from the data's.
REFERENCE_STREAM = 1


@dataclasses.dataclass
class CollectConfig:
    """What to collect. Everything here is recorded in the manifest.

    Attributes:
      task_id: benchmark task id or code.
      quality: one of QUALITIES.
      behaviour: one of BEHAVIOURS; default: ``random`` for the random quality,
        else ``dreamerv2`` (the paper's).
      episodes: episode budget (the most episodes collected).
      seed: base seed; episode i uses (seed, i).
      env: options of ``coworld_bench.envs.make`` (e.g. fast_render).
      random_start, random_end: scripted behaviour's probability that a step's action
        is uniform random, at the first episode and at the end of the budget (linear).
      window: episodes in the rolling mean of the stop rule.
      reference_return: scripted behaviour's R_ref, the pure scripted policy's
        return; measured if None.
      random_return: R_random, the mean return of uniform random actions; measured
        if None (scripted medium-replay/medium-expert and the learning behaviours).
      reference_episodes: episodes used to measure R_ref (the scripted policy varies
        little from episode to episode).
      random_episodes: episodes used to measure R_random (random returns vary widely:
        on Drawer Close 10 random episodes gave 9 to 4764).
      agent_preset: preset of the dreamerv2 behaviour agent (smoke, quick, paper).
      agent_overrides: its config overrides (as ``--set``).
    """

    task_id: str
    quality: str
    behaviour: str | None = None
    episodes: int = 10
    seed: int = 0
    env: dict[str, Any] = dataclasses.field(default_factory=dict)
    random_start: float = 1.0
    random_end: float = 0.0
    window: int = 5
    reference_return: float | None = None
    random_return: float | None = None
    reference_episodes: int = 3
    random_episodes: int = 10
    agent_preset: str = "paper"
    agent_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.task_id = resolve_task(self.task_id).id
        if self.quality not in QUALITIES:
            raise ConfigError(f"Unknown quality {self.quality!r}; valid qualities: "
                             f"{', '.join(QUALITIES)}.")
        if self.behaviour is None:
            self.behaviour = "random" if self.quality == "random" else "dreamerv2"
        valid = (*BUILT_IN, *behaviours.names())
        if self.behaviour not in valid:
            raise ConfigError(f"Unknown behaviour {self.behaviour!r}; valid behaviours: "
                              f"{', '.join(valid)}.")
        if self.quality == "random" and self.behaviour != "random":
            raise ConfigError("The random quality is collected by the random behaviour.")
        if self.behaviour == "random" and self.quality != "random":
            raise ConfigError(f"The random behaviour makes random data, not {self.quality}.")
        if self.episodes < 1:
            raise ConfigError("episodes must be >= 1.")
        for name in ("random_start", "random_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a probability, in [0, 1]; got "
                                  f"{getattr(self, name)!r}.")
        if self.behaviour not in BUILT_IN and self.quality not in THRESHOLDS:
            raise ConfigError(f"The {self.behaviour} behaviour makes {', '.join(THRESHOLDS)} "
                              f"data, not {self.quality}.")
        if self.behaviour == "scripted" and resolve_task(self.task_id).suite != "metaworld":
            raise ConfigError(f"The scripted behaviour exists for Meta-World tasks only, not "
                             f"{self.task_id}; use dreamerv2 or random.")

    def identity(self) -> dict[str, Any]:
        """The fields that define the data (the budget too: it sets the schedule)."""
        d = dataclasses.asdict(self)
        d.pop("reference_episodes")
        d.pop("random_episodes")
        return d

    def random_prob(self, index: int) -> float:
        """Probability that a step of episode ``index`` takes a uniform random action:
        1 for the random behaviour, 0 for expert data and the learning behaviours,
        annealed linearly over the budget for scripted medium data."""
        if self.behaviour == "random":
            return 1.0
        if self.behaviour != "scripted" or self.quality == "expert":
            return 0.0
        frac = index / max(self.episodes - 1, 1)
        return self.random_start + (self.random_end - self.random_start) * frac


# Worker side ---------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_env(config: CollectConfig):
    key = (config.task_id, tuple(sorted(config.env.items())))
    if _WORKER.get("key") != key:
        from coworld_bench import envs

        if "env" in _WORKER:
            _WORKER["env"].close()
        _WORKER["env"] = envs.make(config.task_id, seed=config.seed, **config.env)
        _WORKER["key"] = key
    return _WORKER["env"]


def run_episode(config: CollectConfig, index: int, random_prob: float | None = None,
                reference: bool = False) -> dict:
    """Runs episode ``index`` of a collection; returns its arrays and summary.

    ``random_prob`` overrides the schedule's probability of a uniform random action
    (1: random actions, 0: the scripted policy alone); ``reference``: a reference
    episode (R_ref, R_random), seeded apart from the data's episodes."""
    env = _worker_env(config)
    task = env.unwrapped.task
    seed = derive_seed(config.seed, REFERENCE_STREAM, index) if reference else \
        derive_seed(config.seed, index)
    # Random actions and the per-step choice come from two streams, so that a step's
    # random action does not depend on the choices before it.
    rng = np.random.default_rng([seed, 7])
    coin = np.random.default_rng([seed, 8])
    p = config.random_prob(index) if random_prob is None else random_prob
    scripted = None
    if config.behaviour == "scripted" and p < 1.0:
        from coworld_bench.envs.metaworld import scripted_policy

        scripted = scripted_policy(task)
    obs, _ = env.reset(seed=seed)
    dim = env.action_space.shape[0]
    rows = {k: [] for k in ("image", "state", "action", "reward", "discount", "is_first",
                            "is_last", "is_terminal")}

    def add(obs, action, reward, discount):
        rows["image"].append(obs["image"])
        rows["state"].append(obs["state"])
        rows["action"].append(action)
        rows["reward"].append(reward)
        rows["discount"].append(discount)
        for key in ("is_first", "is_last", "is_terminal"):
            rows[key].append(bool(obs[key]))

    add(obs, np.zeros(dim, np.float32), 0.0, 1.0)
    success = False
    done = False
    while not done:
        action = rng.uniform(-1, 1, dim).astype(np.float32)
        if scripted is not None and coin.random() >= p:
            action = np.zeros(dim, np.float32)
            action[: task.action_dim] = scripted(obs)
            action = np.clip(action, -1, 1).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        success = success or bool(info.get("success", False))
        add(obs, action, reward, 0.0 if terminated else 1.0)
        done = terminated or truncated
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    arrays = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    return {"index": index, "arrays": arrays, "return": float(arrays["reward"].sum()),
            "success": success, "random_prob": float(p), "steps": len(arrays["reward"]) - 1}


def _run_episode_task(args):
    return run_episode(*args)


# Driver side ---------------------------------------------------------------------

def normalised_return(value: float, random_return: float, reference_return: float) -> float:
    """(R - R_random) / (R_ref - R_random): 0 at uniform random actions, 1 at R_ref."""
    return (value - random_return) / (reference_return - random_return)


def threshold_return(level: float, random_return: float, reference_return: float) -> float:
    """The return at normalised ``level``: ``level`` of the way from R_random to R_ref."""
    return random_return + level * (reference_return - random_return)


def stop_reached(returns: list[float], level: float, window: int, random_return: float,
                 reference_return: float) -> bool:
    """The scripted behaviour's stop rule: the mean return of the last ``window``
    episodes is at normalised ``level`` or above (never before the window is full)."""
    if len(returns) < window:
        return False
    mean = float(np.mean(returns[-window:]))
    return mean >= threshold_return(level, random_return, reference_return)


def _stop_reached(config: CollectConfig, returns: list[float]) -> bool:
    if config.quality not in THRESHOLDS:
        return False
    return stop_reached(returns, THRESHOLDS[config.quality], config.window,
                        config.random_return, config.reference_return)


def _reference_mean(config: CollectConfig, random_prob: float, pool=None,
                    episodes: int | None = None) -> float:
    episodes = config.reference_episodes if episodes is None else episodes
    tasks = [(config, i, random_prob, True) for i in range(episodes)]
    results = pool.map(_run_episode_task, tasks) if pool is not None else \
        [_run_episode_task(t) for t in tasks]
    return float(np.mean([r["return"] for r in results]))


def measure_reference_return(config: CollectConfig, pool=None) -> float:
    """R_ref of the scripted behaviour: the pure scripted policy's mean return over
    ``reference_episodes`` episodes seeded apart from the data."""
    return _reference_mean(config, 0.0, pool)


def measure_random_return(config: CollectConfig, pool=None) -> float:
    """R_random: the mean return of uniform random actions over ``random_episodes``
    episodes seeded apart from the data (the first start R_ref's episodes')."""
    return _reference_mean(config, 1.0, pool, config.random_episodes)


def _summary(entries: list[dict], random_return: float | None = None,
             reference_return: float | None = None) -> dict[str, Any]:
    """The episodes' return range; with R_random and R_ref, also normalised."""
    returns = np.array([e["return"] for e in entries]) if entries else np.zeros(1)
    known = [e["success"] for e in entries if e["success"] is not None]
    summary = {"mean": float(returns.mean()), "std": float(returns.std()),
               "min": float(returns.min()), "max": float(returns.max()),
               "success_rate": float(np.mean(known)) if known else None,
               "random_return": random_return, "reference_return": reference_return,
               "normalised": None}
    if random_return is not None and reference_return is not None \
            and reference_return != random_return:
        norm = normalised_return(returns, random_return, reference_return)
        summary["normalised"] = {"mean": float(norm.mean()), "min": float(norm.min()),
                                 "max": float(norm.max())}
    return summary


def _new_manifest(config: CollectConfig, env_description: dict) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "task_id": config.task_id,
        "quality": config.quality,
        "behaviour": config.behaviour,
        "config": config.identity(),
        "episode_budget": config.episodes,
        "env": env_description,
        "seed": config.seed,
        "created_by": f"coworld-bench {__version__}",
        "status": "partial",
        "stop_reason": None,
        "episodes": [],
        "episode_count": 0,
        "step_count": 0,
        "returns": _summary([]),
    }


def _env_description(config: CollectConfig) -> dict:
    return dict(_worker_env(config).unwrapped.description)


def superseded(manifest: dict) -> str | None:
    """Why a dataset made by an earlier definition of its behaviour must not be used
    (None if it may)."""
    config = manifest.get("config") or {}
    if manifest.get("behaviour") == "scripted" and "random_start" not in config:
        return ("made by the scripted behaviour's earlier Gaussian action noise, which the "
                "scripted policies correct: its episodes are all near the scripted expert, "
                f"not {manifest.get('quality')} data")
    return None


def _check_resumable(out: Path, manifest: dict, config: CollectConfig) -> list[dict]:
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{out / MANIFEST}: format version {manifest.get('format_version')!r} "
                           f"cannot be resumed by format {FORMAT_VERSION}.")
    if (reason := superseded(manifest)) is not None:
        raise DatasetError(f"{out}: {reason}. Delete it to collect it anew.")
    theirs, ours = manifest.get("config", {}), config.identity()
    for measured in ("reference_return", "random_return"):
        if ours.get(measured) is None:
            ours[measured] = theirs.get(measured)
    diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if diff:
        details = "; ".join(f"{k}: {theirs.get(k)!r} on disk vs {ours.get(k)!r} asked" for k in diff)
        raise DatasetError(f"{out} holds a different collection ({details}). Choose another "
                           "--out or delete it.")
    entries = manifest["episodes"]
    for i, entry in enumerate(entries):
        path = out / entry["file"]
        if entry.get("index") != i:
            raise DatasetError(f"{out / MANIFEST}: episode entries are out of order at {i}.")
        if not path.exists() or sha256_file(path) != entry["sha256"]:
            raise DatasetError(f"{path}: damaged or missing; run `coworld-bench data verify {out}` "
                               "and delete the dataset to collect it anew.")
    return entries


def select_prefix(returns: list[float], quality: str, window: int,
                  random_return: float) -> tuple[int, float, float]:
    """How many of an improving agent's episodes a quality keeps.

    Returns (count, threshold, best). Only full windows of ``window`` consecutive
    episodes are averaged: a partial window at the start would let one lucky early
    episode set or reach the threshold. ``best`` (R_ref) is the best such mean; the
    data runs from the first episode to the end of the first full window whose mean
    reaches the normalised level 1/3 (medium-replay: ``random_return + (best -
    random_return) / 3``) or 1 (medium-expert: ``best``), so ``count >= window``. An
    agent whose best stays at or below ``random_return`` never reaches a level above
    random: its data then runs to its best window, as for medium-expert.

    With fewer episodes than ``window`` (a small episode budget) the whole run is
    the one window: ``best`` is the mean of all returns and every episode is kept.
    This is not an error, so that a short collection still ends with a dataset.
    """
    if not returns:
        raise ValueError("select_prefix needs at least one episode return.")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    window = min(window, len(returns))
    # means[j] averages episodes j .. j + window - 1.
    means = [float(np.mean(returns[j:j + window])) for j in range(len(returns) - window + 1)]
    best = max(means)
    threshold = best
    if quality == "medium-replay":
        threshold = min(threshold_return(1.0 / 3.0, random_return, best), best)
    first = next(j for j, m in enumerate(means) if m >= threshold)
    return first + window, threshold, best


def collect_with_agent(config: CollectConfig, out: Path, progress: bool) -> dict[str, Any]:
    """A learning behaviour (the paper's dreamerv2): train online, keep the prefix of
    its training episodes the quality asks for."""
    import shutil

    from tqdm.auto import tqdm

    from coworld_bench import envs

    if config.random_return is None:
        config.random_return = measure_random_return(config)
    env = envs.make(config.task_id, seed=config.seed, **config.env)
    staging = out / ".behaviour-replay"
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted run starts again
    agent = behaviours.get(config.behaviour)(env, staging, config.seed, config.agent_preset,
                                             config.agent_overrides)
    bar = tqdm(total=config.episodes, disable=not progress, unit="ep",
               desc=f"{config.behaviour} behaviour on {config.task_id}")
    while len(agent.returns) < config.episodes:
        before = len(agent.returns)
        agent.step()
        if len(agent.returns) > before:
            bar.update(len(agent.returns) - before)
            bar.set_postfix(ret=f"{agent.returns[-1]:.0f}")
    bar.close()
    returns = agent.returns[: config.episodes]
    count, threshold, best = select_prefix(returns, config.quality, config.window,
                                           config.random_return)
    manifest = _new_manifest(config, dict(env.unwrapped.description))
    entries = []
    for i, path in enumerate(sorted(staging.glob("ep*.npz"))[:count]):
        steps = int(path.stem.split("-")[1])
        name = episode_name(i, steps)
        os.replace(path, out / name)
        entries.append({"index": i, "file": name, "steps": steps, "return": returns[i],
                        "success": None, "random_prob": None, "sha256": sha256_file(out / name)})
    shutil.rmtree(staging, ignore_errors=True)
    manifest.update(episodes=entries, episode_count=len(entries),
                    step_count=sum(e["steps"] for e in entries),
                    returns=_summary(entries, config.random_return, best),
                    threshold=threshold,
                    normalised_threshold=normalised_return(threshold, config.random_return, best)
                    if best != config.random_return else None,
                    best_rolling_return=best, trained_episodes=len(returns),
                    stop_reason="threshold reached", status="complete")
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def collect(config: CollectConfig, out: str | Path, workers: int = 1,
            progress: bool = True) -> dict[str, Any]:
    """Collects (or resumes collecting) a dataset into ``out``; returns its manifest.
    One process at a time per folder: a second one (two runs started together on a
    shared data root) waits for the first, then finds the dataset made."""
    import sys

    from coworld_bench import locks

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def waiting(holder):
        print(f"{out}: {holder.splitlines()[0]} is collecting this dataset; waiting for it.",
              file=sys.stderr, flush=True)

    with locks.hold(out / COLLECT_LOCK, wait=True, on_wait=waiting):
        return _collect(config, out, workers, progress)


def _collect(config: CollectConfig, out: Path, workers: int, progress: bool) -> dict[str, Any]:
    import json

    from tqdm.auto import tqdm

    path = out / MANIFEST
    if config.behaviour not in BUILT_IN:
        if path.exists():
            manifest = json.loads(path.read_text())
            _check_resumable(out, manifest, config)
            return manifest
        return collect_with_agent(config, out, progress)
    if path.exists():
        manifest = json.loads(path.read_text())
        entries = _check_resumable(out, manifest, config)
        for measured in ("reference_return", "random_return"):
            if getattr(config, measured) is None:
                setattr(config, measured, manifest["config"].get(measured))
        if manifest["status"] == "complete":
            return manifest
    else:
        manifest = _new_manifest(config, _env_description(config))
        entries = []
    # Files an interrupted run wrote but never entered in the manifest are redone.
    listed = {e["file"] for e in entries}
    for stray in list(out.glob("ep*.npz")) + list(out.glob(".*.tmp")):
        if stray.name not in listed:
            stray.unlink()

    returns = [e["return"] for e in entries]
    todo = range(len(entries), config.episodes)
    pool = None
    if workers > 1 and len(todo):
        pool = mp.get_context("spawn").Pool(workers)
    bar = None
    try:
        if config.behaviour == "scripted" and config.quality in THRESHOLDS:
            if config.reference_return is None:
                config.reference_return = measure_reference_return(config, pool)
            if config.random_return is None:
                config.random_return = measure_random_return(config, pool)
        manifest["config"] = config.identity()
        stopped = bool(returns) and _stop_reached(config, returns)
        bar = tqdm(total=config.episodes, initial=len(entries), disable=not progress,
                   desc=f"collect {config.task_id} {config.quality}", unit="ep")
        start, frames = time.perf_counter(), 0
        if stopped or not len(todo):
            results = iter(())
        elif pool is not None:
            results = pool.imap(_run_episode_task, [(config, i) for i in todo])
        else:
            results = (run_episode(config, i) for i in todo)
        for result in results:
            name = episode_name(result["index"], result["steps"])
            write_episode(out / name, result["arrays"])
            entries.append({"index": result["index"], "file": name, "steps": result["steps"],
                            "return": result["return"], "success": result["success"],
                            "random_prob": result["random_prob"],
                            "sha256": sha256_file(out / name)})
            returns.append(result["return"])
            manifest.update(episodes=entries, episode_count=len(entries),
                            step_count=sum(e["steps"] for e in entries),
                            returns=_summary(entries, config.random_return,
                                             config.reference_return))
            atomic_write_json(path, manifest)
            frames += result["steps"] + 1
            bar.update(1)
            bar.set_postfix(ret=f"{result['return']:.0f}",
                            fps=f"{frames / (time.perf_counter() - start):.0f}")
            if _stop_reached(config, returns):
                stopped = True
                break
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    manifest["returns"] = _summary(entries, config.random_return, config.reference_return)
    if config.quality in THRESHOLDS and config.reference_return is not None:
        level = THRESHOLDS[config.quality]
        manifest["threshold"] = threshold_return(level, config.random_return,
                                                 config.reference_return)
        manifest["normalised_threshold"] = level
        manifest["stop_reason"] = "threshold reached" if stopped else "episode budget exhausted"
    else:
        manifest["stop_reason"] = "episode budget exhausted"
    manifest["status"] = "complete"
    atomic_write_json(path, manifest)
    return manifest


def budget_from_steps(task_id: str, steps: int) -> int:
    return math.ceil(steps / resolve_task(task_id).episode_steps)

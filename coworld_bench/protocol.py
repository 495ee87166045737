"""The written evaluation protocol (``protocol.md`` beside this module) and the
normalised scores it defines.

``protocol_hash()`` identifies the protocol a score was measured under (every
``result.json`` records it); ``references(task)`` gives a task's R_random and R_ref,
computed on the protocol's seeds and cached under the data root; ``normalised(R,
refs)`` is 100 (R - R_random) / (R_ref - R_random), None where the suite has no
reference (RoboDesk).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOL_FILE = Path(__file__).with_name("protocol.md")
SHIPPED_FILE = Path(__file__).with_name("protocol_references.json")

# The protocol's seeds for its reference returns: run seed 0, evaluation point 1.
REFERENCE_SEED = 0
REFERENCE_EVAL_INDEX = 1
RANDOM_EPISODES = 50
EXPERT_EPISODES = 10
# DMC: V-D4RL's convention, score = return / 10 on the 1000-point scale.
DMC_SCALE = 1000.0


def protocol_text() -> str:
    return PROTOCOL_FILE.read_text()


def protocol_hash(text: str | None = None) -> str:
    """The first 16 hex digits of the SHA-256 of the protocol file."""
    data = (protocol_text() if text is None else text).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def protocol_record() -> dict[str, str]:
    """What a result.json records of the protocol."""
    return {"hash": protocol_hash(), "file": "coworld_bench/protocol.md"}


def expert_returns(task_id: str, episodes: int, seed: int = REFERENCE_SEED,
                   eval_index: int = REFERENCE_EVAL_INDEX) -> list[float]:
    """Returns of Meta-World's scripted expert on the evaluation seeds of ``eval_index``
    (episodes 0..episodes-1)."""
    from coworld_bench import envs
    from coworld_bench.envs.metaworld import scripted_policy
    from coworld_bench.evaluation import eval_seed
    from coworld_bench.tasks import resolve_task

    task = resolve_task(task_id)
    policy = scripted_policy(task)
    env = envs.make(task.id, seed=seed, fast_render=True, antialias=False)
    out = []
    try:
        for j in range(episodes):
            obs, _ = env.reset(seed=eval_seed(seed, eval_index, j))
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
                total += float(reward)
                done = terminated or truncated
            out.append(total)
    finally:
        env.close()
    return out


def compute_references(task_id: str, random_episodes: int = RANDOM_EPISODES,
                       expert_episodes: int = EXPERT_EPISODES) -> dict[str, Any]:
    """A task's R_random and R_ref as the protocol defines them (no cache)."""
    from coworld_bench.evaluation import random_action_returns
    from coworld_bench.tasks import resolve_task

    task = resolve_task(task_id)
    out: dict[str, Any] = {"task": task.id, "suite": task.suite, "protocol": protocol_hash()}
    if task.suite == "dmc":
        return {**out, "random": 0.0, "reference": DMC_SCALE,
                "how": "V-D4RL: return / 10 on the 1000-point scale"}
    if task.suite == "robodesk":
        return {**out, "random": None, "reference": None,
                "how": "no reference policy: raw returns"}
    random = random_action_returns(task.id, random_episodes, seed=REFERENCE_SEED,
                                   eval_index=REFERENCE_EVAL_INDEX)
    expert = expert_returns(task.id, expert_episodes)
    return {**out, "random": float(np.mean(random)), "reference": float(np.mean(expert)),
            "random_episodes": random_episodes, "reference_episodes": expert_episodes,
            "how": f"uniform random actions ({random_episodes} episodes) and Meta-World's "
                   f"scripted expert ({expert_episodes} episodes), on the protocol's seeds"}


def shipped_references() -> dict[str, dict[str, Any]]:
    """The reference values shipped with the package (``protocol_references.json``,
    made by ``python -m coworld_bench.protocol``) when they were computed under this
    protocol; {} otherwise."""
    try:
        data = json.loads(SHIPPED_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("tasks", {}) if data.get("protocol") == protocol_hash() else {}


def references(task_id: str, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """A task's references: the shipped table's when it was made under this protocol,
    else ``compute_references`` kept as JSON under ``cache_dir`` (default: the data
    root's ``references/``), keyed by the protocol's hash."""
    from coworld_bench.data import default_root
    from coworld_bench.data.format import atomic_write_json
    from coworld_bench.tasks import resolve_task

    task = resolve_task(task_id)
    shipped = shipped_references().get(task.id)
    if shipped is not None:
        return shipped
    folder = Path(cache_dir) if cache_dir is not None else default_root() / "references"
    path = folder / f"{task.id}-{protocol_hash()}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("protocol") == protocol_hash() and stored.get("task") == task.id:
            return stored
    except (OSError, ValueError, AttributeError):
        pass
    result = compute_references(task.id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
    except OSError:
        pass  # a read-only data root: the values are still returned
    return result


def normalised(score: float, refs: dict[str, Any]) -> float | None:
    """100 (R - R_random) / (R_ref - R_random); None without a reference."""
    if refs.get("reference") is None or refs.get("random") is None:
        return None
    span = refs["reference"] - refs["random"]
    if span == 0:
        return None
    return 100.0 * (float(score) - refs["random"]) / span


def write_shipped_references(path: Path = SHIPPED_FILE) -> dict[str, Any]:
    """Computes every task's references under this protocol and writes the shipped
    table (a maintainer's step after the protocol changes)."""
    from coworld_bench.data.format import atomic_write_json
    from coworld_bench.tasks import TASKS

    table = {"protocol": protocol_hash(), "tasks": {t.id: compute_references(t.id)
                                                    for t in TASKS}}
    atomic_write_json(path, table)
    return table


if __name__ == "__main__":
    for task, refs in write_shipped_references()["tasks"].items():
        print(task, refs["random"], refs["reference"])

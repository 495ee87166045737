"""Finding and reading run directories for the report.

A run directory is one that holds a ``config.json`` written by the runner (an object
with ``algo``, ``target`` and ``seed``). A run enters the report when its
``eval.jsonl`` reads cleanly and ends with the final evaluation; any other run is
listed as excluded, with its path and the reason, and the report goes on.

A run's score is the mean return of its final evaluation (SPEC section 2: 10
episodes with the deterministic policy at the paper's scale).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from coworld_bench import tasks as tasks_lib
from coworld_bench.rundir import (
    CONFIG_FILE, EVAL_FILE, RESULT_FILE, VALUE_TRACE_FILE, parse_overrides, read_evaluations,
)
from coworld_bench.tasks import TaskSpec

__all__ = ["RunRecord", "Problem", "find_runs", "load_runs", "SCALE_KEYS"]

# Settings that change the scale or protocol of a run but not the algorithm: they are
# shown as the run's scale, and do not make a separate table.
SCALE_KEYS = frozenset({
    "train_steps", "eval_every", "eval_episodes", "checkpoint_every", "log_every",
    "dataset_quality", "dataset_behaviour", "dataset_episodes", "dataset_seed", "dataset_dir",
    "fast_render", "antialias", "pretrain_env_steps", "pretrain_updates", "target_updates",
    "source_updates", "rounds",
    "model_updates", "agent_updates", "std_decay_updates", "random_baseline", "collect_worker",
})


@dataclasses.dataclass(frozen=True)
class Problem:
    """A run directory left out of the report, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass
class RunRecord:
    path: Path
    algo: str
    source: TaskSpec | None
    target: TaskSpec
    seed: int
    preset: str
    config: dict[str, Any]
    overrides: dict[str, Any]
    evals: list[dict[str, Any]]  # every evaluation point, the final one last
    result: dict[str, Any] | None
    device: str

    @property
    def final(self) -> dict[str, Any]:
        return self.evals[-1]

    @property
    def score(self) -> float:
        """Mean return of the final evaluation."""
        return float(np.mean(self.final["returns"]))

    @property
    def steps(self) -> int:
        return int(self.final["step"])

    @property
    def benchmark(self) -> str:
        """metaworld, dmc or metaworld-robodesk (the paper's three settings)."""
        if self.source is None:
            return {"robodesk": "metaworld-robodesk"}.get(self.target.suite, self.target.suite)
        if self.source.suite == self.target.suite:
            return self.target.suite
        return f"{self.source.suite}-{self.target.suite}"

    @property
    def quality(self) -> str:
        return str(self.config.get("dataset_quality", "?"))

    @property
    def variant(self) -> str:
        """The settings that make this run a different experiment from the default
        (e.g. ``beta2=0.5``); empty for a default run."""
        items = {k: v for k, v in self.overrides.items() if k not in SCALE_KEYS}
        return ",".join(f"{k}={_plain(v)}" for k, v in sorted(items.items()))

    @property
    def column(self) -> str:
        """The table column: the pair in the paper's notation (``BP->DC*``), or the
        target code for an offline algorithm (its run serves every pair with that
        target)."""
        if self.source is None:
            return self.target.code
        return f"{self.source.code}->{self.target.code}"

    @property
    def scale(self) -> str:
        """The scale it was measured at, for the reproduction report."""
        c = self.config
        data = (f"{c.get('dataset_quality')} data ({c.get('dataset_behaviour')} behaviour, "
                f"{c.get('dataset_episodes')} episodes)")
        return (f"preset {self.preset}, {self.steps:,} updates, "
                f"{len(self.final['returns'])} eval episodes, {data}")

    @property
    def eval_seconds_per_episode(self) -> float | None:
        """Inference wall time per evaluation episode (periodic evaluations if any: the
        final one also records values)."""
        periodic = [e["seconds_per_episode"] for e in self.evals[:-1] if "seconds_per_episode" in e]
        if periodic:
            return float(np.mean(periodic))
        return self.final.get("seconds_per_episode")

    @property
    def random_action(self) -> dict[str, Any] | None:
        """Uniformly random actions on this run's final evaluation seeds (result.json;
        None for runs made without ``random_baseline``)."""
        random = None if self.result is None else self.result.get("random_action")
        return random if isinstance(random, dict) and random.get("returns") else None

    @property
    def wall_time_s(self) -> float | None:
        return None if self.result is None else self.result.get("wall_time_s")

    def value_trace(self) -> dict[str, np.ndarray] | None:
        path = self.path / VALUE_TRACE_FILE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as e:
            from coworld_bench.errors import UserError

            raise UserError(f"{path}: unreadable ({str(e).splitlines()[0]}); its run's final "
                            "evaluation writes it: re-run that run, or move the run out of "
                            "the folder reported.") from None


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def find_runs(root: Path) -> list[Path]:
    """Every directory under ``root`` holding a ``config.json`` (run directories are
    not searched further: their ``work/`` holds replays, not runs)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        if CONFIG_FILE in files:
            found.append(Path(directory))
            subdirs[:] = []
        else:
            subdirs.sort()
    return sorted(found)


def _overrides(config: dict[str, Any]) -> dict[str, Any]:
    if isinstance(config.get("overrides"), dict):
        return dict(config["overrides"])
    # Runs recorded before ``overrides`` existed: read the --set items of the command.
    words = shlex.split(config.get("command") or "")
    items = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    try:
        return parse_overrides(items)
    except Exception:  # noqa: BLE001 - an odd command line only loses the variant label
        return {}


def load_run(path: Path) -> RunRecord:
    """Reads one run directory; raises ValueError naming the file at fault."""
    config_path = path / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path} cannot be read ({error})") from None
    if not isinstance(config, dict) or not {"algo", "target", "seed"} <= set(config):
        raise ValueError(f"{config_path} is not a run config (no algo/target/seed)")
    try:
        target = tasks_lib.resolve_task(config["target"])
        source = tasks_lib.resolve_task(config["source"]) if config.get("source") else None
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{config_path} names an unknown task ({error})") from None
    eval_path = path / EVAL_FILE
    if not eval_path.exists():
        raise ValueError(f"{eval_path} is missing")
    evals = read_evaluations(eval_path)
    if not evals or not evals[-1].get("final"):
        raise ValueError(f"{eval_path} has no final evaluation (the run is unfinished: "
                         "run the same command again to resume it)")
    result = None
    result_path = path / RESULT_FILE
    if result_path.exists():
        try:
            result = json.loads(result_path.read_text())
        except json.JSONDecodeError:
            result = None
    return RunRecord(path=path, algo=str(config["algo"]), source=source, target=target,
                     seed=int(config["seed"]), preset=str(config.get("preset", "?")),
                     config=dict(config.get("config", {})), overrides=_overrides(config),
                     evals=evals, result=result, device=str(config.get("device", "?")))


def load_runs(root: Path) -> tuple[list[RunRecord], list[Problem]]:
    """The finished runs under ``root`` and the directories left out (with reasons).
    Two runs of the same experiment and seed (e.g. a copied folder) keep the first by
    path; the other is listed as a duplicate."""
    records, problems = [], []
    seen: dict[tuple, Path] = {}
    for path in find_runs(Path(root)):
        try:
            record = load_run(path)
        except ValueError as error:
            problems.append(Problem(path, str(error)))
            continue
        key = (record.benchmark, record.quality, record.preset, record.variant, record.algo,
               record.column, record.seed)
        if key in seen:
            problems.append(Problem(path, f"duplicate of {seen[key]} (same algorithm, tasks, "
                                          "settings and seed)"))
            continue
        seen[key] = path
        records.append(record)
    return records, problems

"""What state each run directory under a folder is in (``coworld-bench status``).

A run is *running* while a process holds its lock (``run.lock``, an ``flock`` the
OS drops when that process dies), *finished* once ``result.json`` exists, *broken*
when its config or logs cannot be read (the reason is given), and *unfinished*
otherwise (re-running its command resumes it).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
from pathlib import Path

from coworld_bench.rundir import (
    CHECKPOINT_DIR, CHECKPOINTS, CONFIG_FILE, EVAL_FILE, LOCK_FILE, METRICS_FILE, RESULT_FILE,
    RunError, read_records, read_run_config,
)

__all__ = ["RunState", "run_states", "is_locked"]


@dataclasses.dataclass
class RunState:
    path: Path
    name: str
    algo: str
    seed: str
    preset: str
    progress: str
    last_eval: str
    state: str
    why: str = ""


def is_locked(run_dir: Path) -> bool:
    """True while another process holds the run's lock."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _bad_evaluation(evals: list[dict]) -> str | None:
    """Why the evaluation log cannot be read as one (None when every record can): each
    record needs a numeric step, mean and std."""
    for i, record in enumerate(evals, 1):
        for key in ("step", "mean", "std"):
            value = record.get(key) if isinstance(record, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return (f"eval.jsonl record {i} has no numeric {key!r} "
                        f"({json.dumps(record)[:80]}); restore the file or train the run "
                        "again with --force")
    return None


def _state(run_dir: Path) -> RunState:
    parts = run_dir.parts
    base = dict(path=run_dir, name=parts[-3] if len(parts) >= 3 else "?",
                algo=parts[-2] if len(parts) >= 2 else "?", seed=run_dir.name.removeprefix("seed"),
                preset="?", progress="?", last_eval="–")
    running = is_locked(run_dir)
    try:
        config = read_run_config(run_dir / CONFIG_FILE, fix="train it again with --force")
    except RunError as e:
        return RunState(**base, state="running" if running else "broken", why=str(e))
    total = config.get("config", {}).get("train_steps")
    metrics = read_records(run_dir / METRICS_FILE)
    evals = read_records(run_dir / EVAL_FILE)
    bad = _bad_evaluation(evals)
    if bad:
        return RunState(**base, state="running" if running else "broken", why=bad)
    step = max([int(r.get("step", 0)) for r in metrics + evals if isinstance(r, dict)] or [0])
    last = evals[-1] if evals else None
    base.update(algo=str(config.get("algo", base["algo"])), seed=str(config.get("seed", "?")),
                preset=str(config.get("preset", "?")), progress=f"{step} / {total}",
                last_eval=(f"{last['mean']:.1f} ± {last['std']:.1f} @ {last['step']}"
                           f"{' (final)' if last.get('final') else ''}") if last else "–")
    if running:
        return RunState(**base, state="running")
    if (run_dir / RESULT_FILE).exists():
        finals = sum(bool(r.get("final")) for r in evals)
        if finals != 1:
            return RunState(**base, state="broken",
                            why=f"eval.jsonl holds {finals} final evaluations")
        return RunState(**base, state="finished")
    # Progress is what a resume starts from: the newest loadable checkpoint (records
    # logged after it, or a checkpoint that never reached the disk, are redone).
    saved = _checkpoint_step(run_dir)
    base["progress"] = f"{saved if saved is not None else 0} / {total}"
    why = ("re-run its command to resume it" if saved is not None else
           "no checkpoint yet: re-running its command starts it from the beginning")
    return RunState(**base, state="unfinished", why=why)


def _checkpoint_step(run_dir: Path) -> int | None:
    """The step of the checkpoint a resume would load (latest, else previous), or None.
    Memory-mapped: the weights are not read."""
    for name in CHECKPOINTS:
        path = run_dir / CHECKPOINT_DIR / name
        if not path.exists():
            continue
        import torch

        try:
            return int(torch.load(path, weights_only=True, mmap=True, map_location="cpu")["step"])
        except Exception:  # noqa: BLE001 - torn: the runner falls back to the previous one
            continue
    return None


def run_states(root: Path) -> list[RunState]:
    """Every run directory (a folder with config.json) under ``root``."""
    runs = sorted({p.parent for p in Path(root).rglob(CONFIG_FILE)})
    return [_state(d) for d in runs]

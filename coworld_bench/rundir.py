"""The run directory's format: the names of its files, their readers, and the atomic
writing and ``--set`` parsing every writer of a run uses.

A run lives in ``<out>/<pair or target>/<algo>/seed<N>/`` (see ``coworld_bench.runner``):

    config.json      resolved config, versions, git commit (identity of the run)
    metrics.jsonl    training scalars, one JSON object per logging point
    eval.jsonl       one object per evaluation point: step, returns, success, mean, std
    checkpoint/      latest.pt (and previous.pt, the one before it)
    value_trace.npz  final evaluation: value, reward, discounted_return per step
    result.json      final summary; its presence means the run is finished
    run.lock         held (``flock``) by the process training the run
    tb/              TensorBoard events
    work/            the algorithm's own files (replays, latents, source selection)

This module imports nothing heavy (no torch) and nothing of the runner, status, report
or sweep modules, which all read and write run directories through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coworld_bench.data.format import atomic_write_bytes, atomic_write_json
from coworld_bench.errors import UserError

__all__ = ["CONFIG_FILE", "METRICS_FILE", "EVAL_FILE", "RESULT_FILE", "VALUE_TRACE_FILE",
           "CHECKPOINT_DIR", "CHECKPOINTS", "LOCK_FILE", "TB_DIR", "WORK_DIR", "RunError",
           "read_run_config", "read_records", "read_evaluations", "parse_overrides",
           "atomic_write_bytes", "atomic_write_json"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
RESULT_FILE = "result.json"
VALUE_TRACE_FILE = "value_trace.npz"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINTS = ("latest.pt", "previous.pt")  # newest first
LOCK_FILE = "run.lock"
TB_DIR = "tb"
WORK_DIR = "work"


class RunError(UserError):
    """A run that cannot start as asked; the message says why and what to do."""


def read_run_config(path: Path, fix: str) -> dict[str, Any]:
    """A run's config.json; a corrupt one is an error naming the file and ``fix``."""
    try:
        config = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is corrupt ({e}); it records the run's identity, so the run "
                       f"cannot be used as it is: {fix}.") from None
    if not isinstance(config, dict):
        raise RunError(f"{path} is not a run config (a JSON object); {fix}.")
    return config


def read_records(path: Path) -> list[dict]:
    """The complete JSON lines of a log (a line cut by a kill is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_evaluations(path: Path) -> list[dict[str, Any]]:
    """Every record of an ``eval.jsonl``, strictly: raises ValueError naming the file
    and line when a line is not JSON or not an evaluation record (a step and a
    non-empty returns list), or when the log holds a step or a final evaluation twice."""
    evals = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("returns"), list) \
                or "step" not in record or not record["returns"]:
            raise ValueError(f"{path} line {number} is not an evaluation record "
                             "(needs step and a non-empty returns list)")
        evals.append(record)
    steps = [r["step"] for r in evals if not r.get("final")]
    duplicated = sorted({s for s in steps if steps.count(s) > 1})
    finals = sum(bool(r.get("final")) for r in evals)
    if duplicated or finals > 1:
        what = (f"steps {duplicated} twice" if duplicated else "") + \
            (f"{' and ' if duplicated else ''}{finals} final evaluations" if finals > 1 else "")
        raise ValueError(f"{path} holds {what}: two processes trained this run at once, or a log "
                         "was copied twice; train it again with --force")
    return evals


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["lr=3e-4", "augment_pad=0"]`` -> ``{"lr": "3e-4", ...}``: the text of each
    value, parsed later by the declared type of the algorithm's field."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RunError(f"--set expects key=value, got {item!r}.")
        out[key.strip()] = value
    return out

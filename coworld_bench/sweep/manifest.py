"""The sweep folder's own files: the manifest ``sweep.json`` (read by anyone, written by
the sweep process only, atomically), the sweep's lock, and each job's log with one
header line per attempt."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any

from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.grids import display_command

__all__ = ["MANIFEST", "SWEEP_LOCK", "LOGS", "SUBMITIT_DIR", "STATES", "ATTEMPT_HEADER",
           "read_manifest", "write_manifest", "count_attempts", "last_error"]

MANIFEST = "sweep.json"
SWEEP_LOCK = "sweep.lock"
LOGS = "logs"
SUBMITIT_DIR = "submitit"
STATES = ("pending", "running", "finished", "failed")
ATTEMPT_HEADER = "=== coworld-bench sweep: attempt"


# Manifest ----------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} is corrupt ({e}); the run directories are intact: move it "
                         "away and re-run the sweep command to rebuild it.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("jobs"), dict):
        raise SweepError(f"{path} is not a sweep manifest; move it away and re-run the sweep.")
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    from coworld_bench.data.format import atomic_write_json

    manifest["updated"] = _now()
    atomic_write_json(Path(root) / MANIFEST, manifest)


def count_attempts(log: Path) -> int:
    if not log.exists():
        return 0
    with open(log, errors="replace") as f:
        return sum(line.startswith(ATTEMPT_HEADER) for line in f)


def _attempt_header(job_id: str, attempt: int, command: list[str], where: str) -> str:
    return (f"{ATTEMPT_HEADER} {attempt} of {job_id} at {_now()} on {platform.node()} "
            f"({where}): {display_command(command)}\n")


def last_error(log: Path) -> str:
    """The line of a failed job's log that says why (the CLI's one-line error, else
    the last line)."""
    if not log.exists():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith(ATTEMPT_HEADER)]
    for line in reversed(lines):
        if line.startswith("coworld-bench: error:"):
            return line
    return lines[-1][:300] if lines else ""

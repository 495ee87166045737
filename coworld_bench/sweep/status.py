"""``coworld-bench sweep status DIR``: every job of a sweep with its state, refreshed
from its run directory, beside ``coworld-bench status``'s progress columns."""

from __future__ import annotations

from pathlib import Path

from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.manifest import MANIFEST, STATES, count_attempts, read_manifest
from coworld_bench.textual import table

__all__ = ["status_rows", "status_text", "STATUS_HEADER"]


def status_rows(root: Path) -> tuple[list[list[str]], list[str], dict[str, int]]:
    """The manifest's jobs with their states refreshed from their run directories
    (result.json = finished, lock held = running), beside ``coworld-bench status``'s
    progress columns. Reads only: the sweep process is the manifest's only writer."""
    from coworld_bench.status import is_locked, run_states

    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise SweepError(f"{root} holds no sweep ({MANIFEST} is missing): give the --out folder "
                         "of a `coworld-bench sweep`.")
    states = {Path(s.path).resolve(): s for s in run_states(root)}
    rows, notes = [], []
    counts = {s: 0 for s in STATES}
    for entry in manifest["jobs"].values():
        run_dir = root / entry["run_dir"]
        run = states.get(run_dir.resolve())
        state = entry["state"]
        if run is not None and run.state == "finished":
            state = "finished"
        elif is_locked(run_dir):
            state = "running"
        elif state == "running":  # its process is gone: it resumes on the next sweep
            state = "pending"
        counts[state] += 1
        variant = ",".join(f"{k}={v}" for k, v in entry["variant"].items()) or "–"
        exit_status = "" if entry.get("exit_status") is None else str(entry["exit_status"])
        rows.append([entry["pair"] or entry["target"], entry["algo"], str(entry["seed"]),
                     variant, run.preset if run else "–", run.progress if run else "–",
                     run.last_eval if run else "–", state, exit_status,
                     str(count_attempts(root / entry["log"])), entry["log"]])
        if state == "failed":
            notes.append(f"  failed: {entry['id']}: {entry.get('error') or 'see its log'}\n"
                         f"    log: {root / entry['log']}")
        elif run is not None and run.why and state != "finished" and run.state == "broken":
            notes.append(f"  {entry['id']}: {run.why}")
    return rows, notes, counts


STATUS_HEADER = ["pair/target", "algorithm", "seed", "grid point", "preset", "step / total",
                 "last eval", "state", "exit", "attempts", "log"]


def status_text(root: Path) -> str:
    rows, notes, counts = status_rows(root)
    total = sum(counts.values())
    lines = [table(rows, STATUS_HEADER), "",
             f"{total} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES) + "."]
    lines += notes
    if counts["pending"] or counts["failed"]:
        lines.append("Re-run the sweep command to run the pending and failed jobs.")
    return "\n".join(lines)

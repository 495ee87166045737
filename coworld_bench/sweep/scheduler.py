"""The sweep process: the manifest's only writer and the scheduler of its jobs, with the
local executor (``local``) or submitit's (``cluster``)."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from coworld_bench import locks
from coworld_bench.rundir import RESULT_FILE
from coworld_bench.sweep.checks import check_settings, dataset_ready
from coworld_bench.sweep.cluster import SubmititExecutor, parse_mem_gb, parse_slurm_time
from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.grids import Job, SweepRequest, expand, run_command
from coworld_bench.sweep.local import LocalExecutor, local_slots
from coworld_bench.sweep.manifest import (LOGS, STATES, SWEEP_LOCK, _now, count_attempts,
                                          last_error, read_manifest, write_manifest)

__all__ = ["EXECUTORS", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "Sweep", "run_sweep"]

EXECUTORS = ("local", "slurm", "submitit-local")
# Exit statuses of ``coworld-bench run``: 2 = a user error (among them "the run
# directory is locked by another process"), 130 = interrupted with a checkpoint.
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


class Sweep(LocalExecutor, SubmititExecutor):
    """One sweep process: the manifest's only writer, and the scheduler of its jobs."""

    def __init__(self, request: SweepRequest, root: Path, jobs: list[Job],
                 datasets: dict[str, str | None] | None = None, log=print):
        self.request = request
        self.root = root
        self.jobs = {job.id: job for job in jobs}
        self.datasets = datasets or {}
        self.log = log
        self.stopping = 0
        self.manifest: dict[str, Any] = {}
        self.running: dict[str, Any] = {}  # job id -> Popen (local) or submitit job
        self.elsewhere: set[str] = set()  # locked by a process this sweep did not start
        self.slots: list[dict[str, str]] = []  # local executor: each worker's environment
        self.detached = False  # jobs left queued or running on the cluster
        self._lock = None

    # Manifest ---------------------------------------------------------------

    def entry(self, job_id: str) -> dict[str, Any]:
        return self.manifest["jobs"][job_id]

    def save(self) -> None:
        write_manifest(self.root, self.manifest)

    def record(self, job_id: str, **fields: Any) -> None:
        entry = self.entry(job_id)
        entry.update(fields)
        entry["attempts"] = count_attempts(self.root / entry["log"])
        self.save()

    def open(self) -> None:
        """Takes the sweep lock, merges the request into the manifest and refreshes
        every job of this request from its run directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            handle = locks.hold(self.root / SWEEP_LOCK)
        except locks.LockHeld as held:
            raise SweepError(f"{self.root} is being swept by {held.holder}; wait for it, or stop "
                             "it first (its runs resume). `coworld-bench sweep status "
                             f"{self.root}` shows its progress.") from None
        self._lock = handle
        manifest = read_manifest(self.root) or {"version": 1, "created": _now(), "requests": [],
                                                "jobs": {}}
        request = {**self.request.to_json(), "time": _now(), "argv": sys.argv[1:]}
        manifest["requests"].append(request)
        manifest["request"] = request
        self.manifest = manifest
        for job_id, job in self.jobs.items():
            command = run_command(self.request, job, self.root)
            old = manifest["jobs"].get(job_id)
            entry = {"id": job_id, "algo": job.algo, "pair": job.pair, "target": job.target,
                     "seed": job.seed, "variant": dict(job.variant), "scale": dict(job.scale),
                     "run_dir": job_id,
                     "log": f"{LOGS}/{job.log_name}", "command": command,
                     "state": "pending", "exit_status": None, "attempts": 0, "pid": None,
                     "executor": self.request.executor, "submitit_job_id": None,
                     "error": "", "started": None, "ended": None}
            if old:
                entry.update({k: old[k] for k in ("state", "exit_status", "started", "ended",
                                                  "error", "submitit_job_id", "executor")
                              if k in old})
                if old.get("command") != command:
                    entry["state"] = "pending"  # asked differently: the runner decides
            entry["attempts"] = count_attempts(self.root / entry["log"])
            entry["state"] = self.refresh_state(entry)
            manifest["jobs"][job_id] = entry
        self.save()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def refresh_state(self, entry: dict[str, Any]) -> str:
        from coworld_bench.status import is_locked

        run_dir = self.root / entry["run_dir"]
        # "running": a run whose process outlived a killed sweep and finished after it.
        if (run_dir / RESULT_FILE).exists() and entry["state"] in ("finished", "running"):
            return "finished"
        if is_locked(run_dir):
            return "running"
        return "pending"

    # Scheduling -------------------------------------------------------------

    def todo(self) -> list[str]:
        return [job_id for job_id in self.jobs if self.entry(job_id)["state"] != "finished"]

    def settle(self, job_id: str, exit_status: int | None, error: str = "") -> None:
        """A job's command ended: finished, failed, interrupted (pending again) or the
        run was locked by another process (running elsewhere: waited for)."""
        from coworld_bench.status import is_locked

        entry = self.entry(job_id)
        run_dir = self.root / entry["run_dir"]
        log = self.root / entry["log"]
        fields: dict[str, Any] = {"exit_status": exit_status, "ended": _now(), "pid": None}
        if exit_status == 0 and (run_dir / RESULT_FILE).exists():
            fields.update(state="finished", error="")
        elif exit_status == EXIT_USER_ERROR and is_locked(run_dir):
            fields.update(state="running", error="trained by another process; waited for")
            self.elsewhere.add(job_id)
        elif exit_status == EXIT_INTERRUPTED:  # stopped at its checkpoint (SIGINT)
            fields.update(state="pending", error="interrupted; resumes on the next sweep")
            if not self.stopping:
                self.log(f"interrupted: {job_id} (not restarted by this sweep)")
        else:
            fields.update(state="failed", error=error or last_error(log)
                          or f"exit status {exit_status}")
            self.log(f"failed: {job_id} (exit status {exit_status}): {fields['error']}\n"
                     f"  log: {log}")
        self.record(job_id, **fields)
        if fields["state"] == "finished":
            self.log(f"finished: {job_id}")

    def check_elsewhere(self) -> list[str]:
        """Runs another process was training: finished once its lock is gone, else
        to be started (resumed) by this sweep."""
        from coworld_bench.status import is_locked

        ready = []
        for job_id in sorted(self.elsewhere):
            run_dir = self.root / self.entry(job_id)["run_dir"]
            if is_locked(run_dir):
                continue
            self.elsewhere.discard(job_id)
            if (run_dir / RESULT_FILE).exists():
                self.record(job_id, state="finished", error="", ended=_now())
                self.log(f"finished (by another process): {job_id}")
            else:
                self.record(job_id, state="pending", error="")
                ready.append(job_id)
        return ready

    def next_ready(self, queue: list[str], limit: int) -> list[str]:
        """Up to ``limit`` jobs of ``queue`` to start now, taken out of it: a job whose
        target dataset is missing waits while a job of this sweep that needs the same
        dataset is running or chosen (that one makes it; two would collect into the
        same folder at once)."""
        making = {self.datasets.get(j) for j in self.running}
        chosen = []
        for job_id in list(queue):
            if len(chosen) >= limit:
                break
            dataset = self.datasets.get(job_id)
            if dataset is not None and not dataset_ready(dataset):
                if dataset in making:
                    continue
                making.add(dataset)
            queue.remove(job_id)
            chosen.append(job_id)
        return chosen

    def _handle_signal(self, signum, frame) -> None:
        self.stopping += 1
        if self.stopping == 1:
            self.log(f"\n{signal.Signals(signum).name}: stopping; the running jobs write their "
                     "checkpoints (again to stop them at once). Re-run the same sweep command to "
                     "go on.")

    def run(self) -> int:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous[sig] = signal.signal(sig, self._handle_signal)
            except ValueError:  # not the main thread
                pass
        try:
            if self.request.executor == "local":
                self.run_local()
            else:
                self.run_submitit()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.summary()

    def summary(self) -> int:
        entries = [self.entry(j) for j in self.jobs]
        counts = {s: sum(e["state"] == s for e in entries) for s in STATES}
        self.log(f"Sweep {self.root}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                 + f" of {len(entries)} jobs.")
        for e in entries:
            if e["state"] == "failed":
                self.log(f"  failed: {e['id']} (exit status {e['exit_status']}): {e['error']}\n"
                         f"    log: {self.root / e['log']}")
        if self.stopping:
            return EXIT_INTERRUPTED
        if counts["failed"] or (counts["pending"] and not self.detached):
            return 1
        return 0


def run_sweep(request: SweepRequest, jobs: list[Job] | None = None, log=print) -> int:
    """Runs (or resumes) a sweep; returns the exit status (0 all finished, 1 some
    failed, 130 interrupted)."""
    if request.executor not in EXECUTORS:
        raise SweepError(f"Unknown executor {request.executor!r}; valid executors: "
                         f"{', '.join(EXECUTORS)}.")
    if request.jobs is not None and request.jobs < 1:
        raise SweepError("--jobs must be at least 1.")
    if request.gpus_per_job < 0:
        raise SweepError("--gpus-per-job must be 0 or more.")
    root = Path(request.out)
    jobs = expand(request) if jobs is None else jobs
    datasets = check_settings(request, jobs, log=log)
    if request.executor != "local":
        parse_slurm_time(request.slurm_time)
        parse_mem_gb(request.slurm_mem)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SweepError("The cluster executor needs submitit: pip install 'submitit>=1.5'."
                             ) from None
        if request.executor == "slurm" and shutil.which("srun") is None:
            raise SweepError("--executor slurm: no SLURM here (srun is not on PATH); run the "
                             "sweep on the cluster's login node, or use --executor local.")
    sweep = Sweep(request, root, jobs, datasets, log=log)
    if request.executor == "local":
        sweep.slots = local_slots(request, log)
    sweep.open()
    try:
        return sweep.run()
    finally:
        sweep.close()

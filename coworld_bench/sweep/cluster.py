"""The cluster executor: the jobs submitted through submitit (a SLURM job array, or
submitit's local executor), each requeued on preemption or timeout and resumed from its
run's checkpoint."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.local import _gpu_devices
from coworld_bench.sweep.manifest import SUBMITIT_DIR, _attempt_header, _now, count_attempts

__all__ = ["parse_slurm_time", "parse_mem_gb", "RunJob", "SubmititExecutor"]


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``) -> whole minutes (rounded up)."""
    text = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise SweepError(f"--slurm-time {text!r} is not a SLURM time (e.g. 24:00:00, 2-00:00:00 "
                         "or 90 for minutes).")
    days, a, b, c = match.groups()
    a, b, c = int(a), (int(b) if b else None), (int(c) if c else None)
    if days is not None:
        seconds = int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        seconds = a * 3600 + b * 60 + c
    elif b is not None:
        seconds = a * 60 + b
    else:
        seconds = a * 60
    if seconds <= 0:
        raise SweepError(f"--slurm-time {text!r} is zero.")
    return math.ceil(seconds / 60)


def parse_mem_gb(text: str | None) -> float | None:
    """``64G``, ``64GB``, ``64000M``, ``1T`` or a number of GB -> GB."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", str(text).upper())
    if not match:
        raise SweepError(f"--slurm-mem {text!r} is not a size (e.g. 64G or 64000M).")
    scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "": 1.0, "T": 1024.0}[match.group(2)]
    return float(match.group(1)) * scale


def _child_signals_ignored() -> None:
    """In a cluster job, SLURM signals every process of the step; the run must stop
    only through its own SIGINT path (checkpoint, then exit), sent by ``RunJob``."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


try:  # submitit requeues a callable that has a ``checkpoint`` method
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # the local executor needs no submitit
    _Checkpointable = object


class RunJob(_Checkpointable):
    """A submitit job: one ``coworld-bench run`` command, its output appended to the
    job's log. Checkpointable: on preemption or timeout submitit calls ``checkpoint``,
    which stops the run through its SIGINT path (it writes its checkpoint and exits),
    then requeues this same command, which resumes the run."""

    def __init__(self, command: list[str], log: str, job_id: str, env: dict[str, str],
                 grace_s: float = 60.0):
        self.command = list(command)
        self.log = log
        self.job_id = job_id
        self.env = dict(env)
        self.grace_s = grace_s
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = None
        return state

    def __call__(self) -> dict[str, Any]:
        log = Path(self.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        attempt = count_attempts(log) + 1
        env = {**os.environ, **self.env}
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?")
        with open(log, "a") as out:
            where = f"submitit job {job}, pid {os.getpid()}"
            out.write(_attempt_header(self.job_id, attempt, self.command, where))
            out.flush()
            self._process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, preexec_fn=_child_signals_ignored)
            # poll, not wait(): the preemption handler runs in this thread and must be
            # able to poll the process too (Popen.wait holds a lock a handler would block on).
            while self._process.poll() is None:
                time.sleep(0.5)
        return {"exit_status": self._process.returncode, "attempt": attempt}

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # the run: stop after this update, checkpoint
            deadline = time.monotonic() + self.grace_s
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if process.poll() is None:
                process.kill()  # it resumes from its last periodic checkpoint
        with open(self.log, "a") as out:
            out.write(f"=== coworld-bench sweep: preempted or timed out at {_now()}; the run "
                      "stopped at its checkpoint and the job is requeued (unless it timed out "
                      "--max-requeues times)\n")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


_ACTIVE_SUBMITIT = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
                    "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")


class SubmititExecutor:
    """The submitit executor's part of ``Sweep`` (see ``scheduler``): SLURM, or
    submitit's local executor."""

    def _executor(self):
        import submitit

        request = self.request
        cluster = "slurm" if request.executor == "slurm" else "local"
        folder = self.root / SUBMITIT_DIR
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                         **{f"{cluster}_max_num_timeout": request.max_requeues})
        params: dict[str, Any] = {"name": "coworld-sweep",
                                  "timeout_min": parse_slurm_time(request.slurm_time),
                                  "stderr_to_stdout": True}
        if request.cpus_per_job:
            params["cpus_per_task"] = request.cpus_per_job
        mem = parse_mem_gb(request.slurm_mem)
        if mem:
            params["mem_gb"] = mem
        if cluster == "slurm":
            if request.gpus_per_job:
                params["gpus_per_node"] = request.gpus_per_job
            params["slurm_array_parallelism"] = request.jobs or 256
            if request.slurm_partition:
                params["slurm_partition"] = request.slurm_partition
            if request.slurm_account:
                params["slurm_account"] = request.slurm_account
            if request.slurm_setup:
                params["slurm_setup"] = list(request.slurm_setup)
        elif _gpu_devices() and request.gpus_per_job:
            params["gpus_per_node"] = request.gpus_per_job
        executor.update_parameters(**params)
        return executor, cluster

    def _job_env(self) -> dict[str, str]:
        if os.environ.get("OMP_NUM_THREADS"):
            return {}
        if self.request.executor == "slurm":
            return {"OMP_NUM_THREADS": str(self.request.cpus_per_job)} \
                if self.request.cpus_per_job else {}
        n = self.request.jobs or 1
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}

    def _submit(self, executor, cluster: str, job_ids: list[str]) -> None:
        entries = [self.entry(j) for j in job_ids]
        env = self._job_env()
        calls = [RunJob(e["command"], str(self.root / e["log"]), e["id"], env) for e in entries]
        if cluster == "slurm" and len(calls) > 1:
            with executor.batch():
                handles = [executor.submit(call) for call in calls]
        else:
            handles = [executor.submit(call) for call in calls]
        for job_id, handle in zip(job_ids, handles):
            self.running[job_id] = handle
            self.record(job_id, state="pending" if cluster == "slurm" else "running",
                        submitit_job_id=str(handle.job_id), started=_now(), ended=None,
                        exit_status=None, error="", pid=None,
                        submitit_log=str(handle.paths.stdout))
        self.log(f"submitted {len(handles)} job(s) to submitit ({cluster}): "
                 + ", ".join(str(h.job_id) for h in handles[:8])
                 + (" ..." if len(handles) > 8 else ""))

    def _reattach(self, cluster: str, job_id: str):
        """A job this sweep (or a previous one) submitted to SLURM and that is still
        queued or running there: followed, not submitted again."""
        import submitit

        submitted = self.entry(job_id).get("submitit_job_id")
        if cluster != "slurm" or not submitted:
            return None
        handle = submitit.SlurmJob(folder=self.root / SUBMITIT_DIR, job_id=submitted)
        try:
            state = handle.get_info(mode="force").get("State", "UNKNOWN")
        except Exception:  # noqa: BLE001 - sacct unavailable: submit again (the lock guards)
            return None
        return handle if state.split()[0] in _ACTIVE_SUBMITIT else None

    def _outcome(self, handle) -> tuple[int | None, str]:
        try:
            result = handle.result()
        except Exception as e:  # noqa: BLE001 - the job died or was cancelled
            return None, f"submitit job {handle.job_id} ended without a result: " \
                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
        return int(result["exit_status"]), ""

    def run_submitit(self) -> None:
        from coworld_bench.status import is_locked

        executor, cluster = self._executor()
        poll = self.request.poll_s or (30.0 if cluster == "slurm" else 1.0)
        limit = None if cluster == "slurm" else (self.request.jobs or 1)
        queue = []
        for job_id in self.todo():
            handle = self._reattach(cluster, job_id)  # first: a requeued job holds no lock
            if handle is not None:
                self.running[job_id] = handle
            elif self.entry(job_id)["state"] == "running":  # locked by another process
                self.elsewhere.add(job_id)
            else:
                queue.append(job_id)
        self.log(f"Sweep {self.root}: {len(queue)} of {len(self.jobs)} jobs to submit "
                 f"({len(self.running)} still queued or running on the cluster).")
        while queue or self.running or (self.elsewhere and not self.stopping):
            if self.stopping:
                if cluster == "slurm":  # they go on there; the next sweep follows them
                    self.detached = True
                    self.log(f"{len(self.running)} job(s) stay queued or running on the "
                             "cluster; re-run the same sweep command to follow them.")
                else:
                    for job_id, handle in self.running.items():
                        handle.cancel(check=False)
                        self.record(job_id, state="pending", error="cancelled by the sweep")
                self.running.clear()
                return
            free = len(queue) if limit is None else max(0, limit - len(self.running))
            chosen = self.next_ready(queue, free) if queue and free else []
            ready = [j for j in chosen if not is_locked(self.root / self.entry(j)["run_dir"])]
            self.elsewhere.update(j for j in chosen if j not in ready)
            if ready:
                self._submit(executor, cluster, ready)
            for job_id, handle in list(self.running.items()):
                if cluster == "slurm" and self.entry(job_id)["state"] == "pending" and \
                        handle.state.startswith("RUNNING"):
                    self.record(job_id, state="running")
                if not handle.done():
                    continue
                del self.running[job_id]
                exit_status, error = self._outcome(handle)
                self.settle(job_id, exit_status, error)
            queue += [j for j in self.check_elsewhere() if j not in queue]
            if not self.request.wait and cluster == "slurm":
                self.detached = True
                held = f" {len(queue)} job(s) wait for a dataset a submitted job makes: " \
                       "re-run the command once it is made to submit them." if queue else ""
                self.log("Submitted; not waiting (--no-wait). Follow the jobs with "
                         f"`coworld-bench sweep status {self.root}`; re-running the same sweep "
                         f"command follows them and submits what failed.{held}")
                return
            time.sleep(poll)

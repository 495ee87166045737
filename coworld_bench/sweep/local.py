"""The local executor: ``--jobs`` runs at a time on this machine, each worker with its
group of GPUs (``CUDA_VISIBLE_DEVICES``) and its share of the cores."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.grids import SweepRequest
from coworld_bench.sweep.manifest import _attempt_header, _now, count_attempts

__all__ = ["local_slots", "LocalExecutor"]


def _gpu_devices() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no CUDA build: no GPUs
        return []


def local_slots(request: SweepRequest, log=print) -> list[dict[str, str]]:
    """The local executor's worker slots: the environment each adds to its runs
    (``CUDA_VISIBLE_DEVICES``: its group of ``--gpus-per-job`` GPUs, several slots
    sharing a group when ``--jobs`` exceeds the groups; ``OMP_NUM_THREADS``: the cores
    divided among the slots unless set). Refuses the paper preset without a GPU."""
    devices = _gpu_devices()
    g = request.gpus_per_job
    if g == 0:
        devices = []
    groups = [devices[i:i + g] for i in range(0, len(devices) - g + 1, g)] if devices else []
    if devices and not groups:
        raise SweepError(f"--gpus-per-job {g} but this machine has {len(devices)} GPUs "
                         f"({','.join(devices)}).")
    if request.preset == "paper" and not groups and not request.yes:
        raise SweepError("No GPU here, and the paper preset takes days to weeks per run on a "
                         "CPU: add --preset quick, run the sweep on a cluster (--executor "
                         "slurm), or add --yes to start it here anyway.")
    n = request.jobs or len(groups) or 1
    if groups and n > len(groups):
        log(f"note: {n} workers share {len(groups)} GPU group(s) of {g}.")
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    slots = []
    for k in range(n):
        env = {"OMP_NUM_THREADS": threads}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[k % len(groups)]) if groups else ""
        slots.append(env)
    if not groups and not _gpu_devices():
        for env in slots:  # nothing to hide
            del env["CUDA_VISIBLE_DEVICES"]
    return slots


class LocalExecutor:
    """The local executor's part of ``Sweep`` (see ``scheduler``): it launches each job's
    command in a worker slot and settles it when it ends."""

    def _launch_local(self, job_id: str, slot: int, env_extra: dict[str, str]) -> None:
        entry = self.entry(job_id)
        log = self.root / entry["log"]
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "a")
        attempt = count_attempts(log) + 1
        devices = env_extra.get("CUDA_VISIBLE_DEVICES")
        where = f"worker {slot}" + (f", CUDA_VISIBLE_DEVICES={devices}" if devices else "")
        out.write(_attempt_header(job_id, attempt, entry["command"], where))
        out.flush()
        # Its own session: a Ctrl-C at the terminal reaches the sweep only, which passes
        # one SIGINT on to each run (a second one would stop a run before its checkpoint).
        process = subprocess.Popen(entry["command"], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env_extra}, start_new_session=True)
        out.close()
        process.slot = slot  # type: ignore[attr-defined]
        self.running[job_id] = process
        self.record(job_id, state="running", pid=process.pid, started=_now(), ended=None,
                    exit_status=None, error="")

    def run_local(self) -> None:
        from coworld_bench.status import is_locked

        slots = self.slots or local_slots(self.request, self.log)
        queue = self.todo()
        free = list(range(len(slots)))
        forwarded = 0
        poll = self.request.poll_s or 1.0
        self.log(f"Sweep {self.root}: {len(queue)} of {len(self.jobs)} jobs to run, "
                 f"{len(slots)} at a time.")
        for job_id in list(queue):
            if self.entry(job_id)["state"] == "running":  # locked at start: another process
                self.elsewhere.add(job_id)
                queue.remove(job_id)
        if self.elsewhere:
            self.log(f"waiting for {len(self.elsewhere)} run(s) trained by other processes: "
                     + ", ".join(sorted(self.elsewhere)))
        while queue or self.running or (self.elsewhere and not self.stopping):
            if self.stopping and forwarded < self.stopping:
                for process in self.running.values():
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)
                forwarded = self.stopping
                queue = []
            while queue and free and not self.stopping:
                ready = self.next_ready(queue, 1)
                if not ready:
                    break
                job_id = ready[0]
                if is_locked(self.root / self.entry(job_id)["run_dir"]):
                    self.elsewhere.add(job_id)
                    self.record(job_id, state="running", error="trained by another process")
                    continue
                slot = free.pop(0)
                self._launch_local(job_id, slot, slots[slot])
            for job_id, process in list(self.running.items()):
                if process.poll() is None:
                    continue
                del self.running[job_id]
                free.append(process.slot)
                free.sort()
                self.settle(job_id, process.returncode)
            if not self.stopping:
                queue += [j for j in self.check_elsewhere() if j not in queue]
            time.sleep(poll)

"""Sweeps: the paper's grids as one command, on this machine or on a SLURM cluster.

``coworld-bench sweep`` expands algorithms x pairs (or a named grid of the paper) x
seeds x grid points into jobs; each job is exactly one ``coworld-bench run`` command,
so it has the run lifecycle's run directory, lock, resume and skip-when-finished. This
module schedules nothing itself beyond a pool of processes: on one machine it keeps
``--jobs`` runs going (GPUs handed out through ``CUDA_VISIBLE_DEVICES``); on a cluster
it submits them through submitit as a SLURM job array, each job requeued on preemption
or timeout and resumed from the run's checkpoint.

A sweep folder ``DIR`` holds::

    sweep.json                the manifest: what was asked, every job's run directory,
                              state, exit status, log and attempts (written atomically,
                              by the sweep process only)
    sweep.lock                held by the sweep process while it runs (one at a time)
    logs/<job>.log            each job's output, one "=== coworld-bench sweep: attempt"
                              header per attempt
    submitit/                 submitit's own files (cluster executor)
    <pair or target>/<algo>/seed<N>/             a run at the default settings
    <k>=<v>[,<k2>=<v2>]/<pair or target>/<algo>/seed<N>/   a run at a grid point

A grid point's settings name its folder, so ``coworld-bench report DIR`` finds every
run and tells the points apart (it reads each run's settings from its config.json). A
grid value ``default`` means "not set": that point is the default run, in the default
folder, shared with any other sweep that asks for it.

Job states: *pending* (not started, or interrupted: the next sweep resumes it),
*running* (a process holds the run's lock: this sweep's, or one started elsewhere),
*finished* (result.json written) and *failed* (the command exited with an error; its
log says why). Re-running the sweep command runs what is pending or failed; a
finished job is not started again; a run locked by another process (e.g. a job that
outlived a killed sweep) is waited for, not started twice.

The package's modules: ``grids`` (named grids, the request, its jobs and their
commands), ``checks`` (what is checked before anything starts), ``cost`` (GPU-hours
and the dry run), ``manifest`` (sweep.json, the lock, the logs), ``scheduler`` (the
sweep process, ``run_sweep``), ``local`` and ``cluster`` (the executors), ``status``
(``coworld-bench sweep status``).
"""

from coworld_bench.sweep.checks import check_existing_runs, check_settings, dataset_ready
from coworld_bench.sweep.cluster import RunJob, parse_mem_gb, parse_slurm_time
from coworld_bench.sweep.cost import dry_run_text, gpu_hours, paper_name, training_minutes
from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.grids import (
    ABLATIONS, DMC_PAIRS, MW_PAIRS, NAMED_GRIDS, OFFLINE_BASELINES, RD_PAIRS, SENSITIVITY_VALUES,
    STUDY_SCALE, STUDY_UPDATES, Block, Job, NamedGrid, SweepRequest, display_command, expand,
    job_overrides, parse_grid, run_command, variant_folder,
)
from coworld_bench.sweep.local import local_slots
from coworld_bench.sweep.manifest import (
    ATTEMPT_HEADER, LOGS, MANIFEST, STATES, SUBMITIT_DIR, SWEEP_LOCK, count_attempts, last_error,
    read_manifest, write_manifest,
)
from coworld_bench.sweep.scheduler import (
    EXECUTORS, EXIT_INTERRUPTED, EXIT_USER_ERROR, Sweep, run_sweep,
)
from coworld_bench.sweep.status import STATUS_HEADER, status_rows, status_text

__all__ = ["SweepError", "Block", "NamedGrid", "NAMED_GRIDS", "Job", "SweepRequest",
           "expand", "gpu_hours", "dry_run_text", "run_sweep", "status_rows", "status_text",
           "RunJob", "parse_slurm_time", "parse_mem_gb", "MANIFEST", "STATES",
           # and, as when the sweep was one module, the parts the CLI and tests reach:
           "ABLATIONS", "DMC_PAIRS", "MW_PAIRS", "OFFLINE_BASELINES", "RD_PAIRS",
           "SENSITIVITY_VALUES", "STUDY_SCALE", "STUDY_UPDATES", "display_command",
           "job_overrides", "parse_grid", "run_command", "variant_folder", "local_slots",
           "ATTEMPT_HEADER", "LOGS", "SUBMITIT_DIR", "SWEEP_LOCK", "count_attempts", "last_error",
           "read_manifest", "write_manifest", "EXECUTORS", "EXIT_INTERRUPTED", "EXIT_USER_ERROR",
           "Sweep", "STATUS_HEADER", "check_existing_runs", "check_settings", "dataset_ready",
           "paper_name", "training_minutes"]

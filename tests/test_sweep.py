"""``coworld-bench sweep``: job expansion, named grids, GPU-hour estimates, and real
sweeps of smoke runs through the local process pool and through submitit (its local
executor, with one preemption requeue), killed and resumed."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coworld_bench import sweep
from coworld_bench.cli import main
from coworld_bench.errors import UserError
from coworld_bench.sweep import Job, SweepError, SweepRequest


def request(**kw):
    return SweepRequest(**{"algos": None, "pairs": [], "seeds": [0, 1, 2], **kw})


# Expansion -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,runs,cells", [
    # 6 pairs: 4 pair algorithms x 6 pairs + 6 per-target ones x 6 distinct targets.
    ("paper:table2", 180, 60),
    ("paper:table3", 144, 48),  # 3 pair + 5 offline algorithms, 6 pairs / 6 targets
    ("paper:table4", 90, 30),
    # Figure 4: (offline-dv2, multi-source) x 4 targets + (dv2-finetune, coworld) x 4 pairs;
    # tables 4-6: coworld low-dim source, coworld sparse source, multitask-dv2, 2 pairs each.
    ("paper:robodesk", 66, 22),
    ("matrix:mw", 108, 36),  # coworld x 30 pairs + offline-dv2 x 6 targets
    ("paper:ablations", 15, 5),
    ("paper:sensitivity", 42, 14),  # default (coworld, dv2-finetune) + 3 settings x 4 values
    # (coworld, dv2-finetune) x 2 pairs + 3 offline x 2 targets + w/o Max on one pair.
    ("study:cpu", 33, 11),
    ("study:zoo", 42, 14),  # 7 offline algorithms x 2 targets
])
def test_named_grid_job_counts(name, runs, cells):
    jobs = sweep.expand(request(pairs=[name], preset=sweep.NAMED_GRIDS[name].preset or "paper"))
    assert len(jobs) == runs and len(set(jobs)) == runs
    assert len({(j.variant, j.algo, j.where) for j in jobs}) == cells
    assert len({j.id for j in jobs}) == runs  # every job its own run directory
    assert [j.seed for j in jobs[:cells]] == [0] * cells  # seed-major: seed 0 of every cell first


def test_offline_algorithms_run_once_per_target():
    jobs = sweep.expand(request(pairs=["paper:table2"]))
    dv2 = [j for j in jobs if j.algo == "offline-dv2"]
    assert len(dv2) == 18 and all(j.pair is None for j in dv2)
    assert sorted({j.target for j in dv2}) == sorted(["BP", "BT", "DC", "DCS", "HP", "WC"])
    coworld = [j for j in jobs if j.algo == "coworld"]
    assert {j.pair for j in coworld} == {"BP-DCS", "DC-BP", "BT-WC", "BP-HP", "WC-DC", "HP-BT"}
    # Two pairs with one target, and that target alone: bc runs once, coworld per pair.
    jobs = sweep.expand(request(algos=["bc", "coworld"], pairs=["WW-WD", "WU-WD", "WD"],
                                seeds=[0]))
    assert [(j.algo, j.pair, j.target) for j in jobs] == [
        ("bc", None, "WD"), ("coworld", "WW-WD", None), ("coworld", "WU-WD", None)]
    assert [j.id for j in jobs] == ["WD/bc/seed0", "WW-WD/coworld/seed0", "WU-WD/coworld/seed0"]
    with pytest.raises(SweepError, match="pairs SOURCE-TARGET"):
        sweep.expand(request(algos=["coworld"], pairs=["WD"]))


def test_named_grid_restricted_to_some_algorithms():
    jobs = sweep.expand(request(algos=["coworld"], pairs=["paper:table2"], seeds=[0]))
    assert len(jobs) == 6 and {j.algo for j in jobs} == {"coworld"}
    with pytest.raises(SweepError, match="not in paper:table3.*offline-dv2"):
        sweep.expand(request(algos=["dv2-finetune-ewc"], pairs=["paper:table3"]))


def test_grid_points_land_in_distinct_folders(tmp_path):
    req = request(algos=["coworld"], pairs=["DC-BP"], seeds=[0], grid=["beta2=default,0.5",
                                                                       "k=0.1,0.3"],
                  settings=["eval_every=0"], preset="smoke", out=str(tmp_path))
    jobs = sweep.expand(req)
    assert [j.id for j in jobs] == ["k=0.1/DC-BP/coworld/seed0", "k=0.3/DC-BP/coworld/seed0",
                                    "beta2=0.5,k=0.1/DC-BP/coworld/seed0",
                                    "beta2=0.5,k=0.3/DC-BP/coworld/seed0"]
    command = sweep.run_command(req, jobs[2], tmp_path)
    assert command[command.index("--out") + 1] == str(tmp_path.resolve() / "beta2=0.5,k=0.1")
    sets = [command[i + 1] for i, w in enumerate(command) if w == "--set"]
    assert sets == ["eval_every=0", "beta2=0.5", "k=0.1"]
    # 'default' alone: the default run, in the default folder (shared with any table).
    only_default = sweep.expand(request(algos=["coworld"], pairs=["DC-BP"], seeds=[0],
                                        grid=["beta2=default"]))
    assert [j.id for j in only_default] == ["DC-BP/coworld/seed0"]
    # A value a folder cannot hold: replaced, with a hash of the exact settings.
    a = sweep.variant_folder((("dataset_dir", "/data/x"),))
    b = sweep.variant_folder((("dataset_dir", "_data_x"),))
    assert "/" not in a and a.startswith("dataset_dir=_data_x-") and a != b
    with pytest.raises(SweepError, match="both in --set and --grid"):
        sweep.expand(request(algos=["bc"], pairs=["WD"], grid=["lr=1,2"], settings=["lr=3"]))
    with pytest.raises(SweepError, match="named grid itself"):
        sweep.expand(request(pairs=["paper:table4"], settings=["dataset_quality=random"]))


def test_dry_run_gpu_hours_by_hand(tmp_path):
    """The paper's training minutes (RTX 3090): CoWorld 3346, Offline DV2 2054, DV2 Finetune
    + EWC 1533; Multi-Task DV2 is not in the table."""
    req = request(algos=["coworld", "offline-dv2", "dv2-finetune-ewc", "multitask-dv2"],
                  pairs=["BP-DC", "WC-DC"], seeds=[0, 1], out=str(tmp_path))
    jobs = sweep.expand(req)
    assert len(jobs) == 4 + 2 + 4 + 4  # offline-dv2 once per target: DC
    hours = sweep.gpu_hours(jobs)
    assert hours["coworld"] == pytest.approx(3346 / 60)
    assert hours["offline-dv2"] == pytest.approx(2054 / 60)
    assert hours["dv2-finetune-ewc"] == pytest.approx(1533 / 60)
    assert hours["multitask-dv2"] is None
    text = sweep.dry_run_text(req, jobs, tmp_path)
    # (4 x 3346 + 2 x 2054 + 4 x 1533) / 60 = 23624 / 60 = 393.7
    assert "Estimated GPU-hours: 394 + 4 runs of unknown cost (multitask-dv2)." in text
    rows = {tuple(line.split()[1:3]): line.split()[3:] for line in text.splitlines()
            if line.startswith("(default)")}
    assert rows[("coworld", "BP-DC")] == ["0,1", "2", "55.8", "111.5"]  # 2 x 55.77
    assert rows[("offline-dv2", "DC")] == ["0,1", "2", "34.2", "68.5"]  # 2 x 34.23
    assert rows[("multitask-dv2", "WC-DC")] == ["0,1", "2", "unknown", "unknown"]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_every_named_grid_resolves_as_the_runner_will():
    """Each named grid's algorithms take pairs or targets as the algorithm says, and its
    settings exist and are valid (an algorithm that cannot be imported is only warned)."""
    for name, grid in sweep.NAMED_GRIDS.items():
        req = request(pairs=[name], seeds=[0], preset=grid.preset or "paper")
        jobs = sweep.expand(req)
        datasets = sweep.check_settings(req, jobs, log=lambda line: None)
        assert set(datasets) == {j.id for j in jobs}


def test_cpu_study_gives_every_run_the_same_updates(tmp_path):
    """study:cpu: its scale settings reach each run's command and resolved config (996
    updates for every algorithm, CoWorld's quick schedule), but name no folder; the grid
    refuses any preset but quick."""
    from coworld_bench import registry, tasks

    req = request(pairs=["study:cpu"], preset="quick", out=str(tmp_path))
    jobs = sweep.expand(req)
    assert {j.id.split("/")[0] for j in jobs} == {"DC-BP", "WC-DC", "BP", "DC"}
    for job in jobs:
        cls = registry.get(job.algo)
        config = cls.make_config("quick", sweep.job_overrides(req, job))
        pair = tasks.resolve_pair(job.pair) if job.pair else None
        target = pair.target if pair else tasks.resolve_task(job.target)
        config = cls.for_tasks(config, pair.source if pair else None, target)
        assert config.train_steps == 996, job.id
        command = sweep.run_command(req, job, tmp_path)
        sets = [command[i + 1] for i, w in enumerate(command) if w == "--set"]
        assert sets == [f"{k}={v}" for k, v in job.scale]
        assert command[command.index("--out") + 1] == str(tmp_path.resolve())
    dv2 = next(j for j in jobs if j.algo == "offline-dv2")
    assert dict(dv2.scale) == {"train_steps": "996", "model_updates": "498"}
    finetune = next(j for j in jobs if j.algo == "dv2-finetune")
    assert dict(finetune.scale)["pretrain_env_steps"] == "1500"  # CoWorld's 300 source updates
    assert {j.pair for j in jobs if j.algo == "coworld-brute-force"} == {"DC-BP"}
    assert all(p in sweep.MW_PAIRS for p in {j.pair for j in jobs} - {None})  # Table 2 pairs
    text = sweep.dry_run_text(req, jobs, tmp_path)
    assert "model_updates=498,train_steps=996" in text.splitlines()[4 + 2]  # offline-dv2 BP
    with pytest.raises(SweepError, match="sized for --preset quick"):
        sweep.expand(request(pairs=["study:cpu"]))
    with pytest.raises(SweepError, match="named grid itself"):
        sweep.expand(request(pairs=["study:cpu"], preset="quick", settings=["train_steps=5"]))


def test_zoo_study_runs_the_cpu_studys_budget_and_bc():
    """study:zoo: every run of the rest of the zoo resolves to study:cpu's 996 updates
    (LOMPO: half model, half agent), and its BC runs are study:cpu's own commands."""
    from coworld_bench import registry, tasks

    req = request(pairs=["study:zoo"], preset="quick")
    jobs = sweep.expand(req)
    assert {j.id.split("/")[0] for j in jobs} == {"BP", "DC"}
    for job in jobs:
        cls = registry.get(job.algo)
        config = cls.for_tasks(cls.make_config("quick", sweep.job_overrides(req, job)), None,
                               tasks.resolve_task(job.target))
        assert config.train_steps == 996, job.id
        if job.algo == "lompo":
            assert (config.model_updates, config.agent_updates) == (498, 498)
    cpu = sweep.expand(request(pairs=["study:cpu"], preset="quick"))
    zoo_bc = {(j.id, j.scale) for j in jobs if j.algo == "bc"}
    assert zoo_bc == {(j.id, j.scale) for j in cpu if j.algo == "bc"} and len(zoo_bc) == 6


def test_a_grids_scale_makes_no_table_of_its_own():
    """Every setting a named grid sets as its scale is one the report shows as a run's
    scale: a study's algorithms stay in one table (LOMPO's agent_updates once made its
    own)."""
    from coworld_bench.report.runs import SCALE_KEYS

    for name, grid in sweep.NAMED_GRIDS.items():
        for block in grid.blocks:
            assert {key for key, _ in block.scale} <= SCALE_KEYS, name


def test_bad_input_names_the_valid_choices(capsys, tmp_path):
    from coworld_bench.registry import UnknownAlgorithmError

    with pytest.raises(UnknownAlgorithmError, match="Valid algorithms: .*coworld"):
        sweep.expand(request(algos=["cowrold"], pairs=["WW-WD"]))
    with pytest.raises(SweepError, match="valid named grids: paper:table2, paper:table3"):
        sweep.expand(request(pairs=["paper:table9"]))
    with pytest.raises(UserError, match="Unknown task"):
        sweep.expand(request(algos=["bc"], pairs=["XX"]))
    with pytest.raises(SweepError, match="not both"):
        sweep.expand(request(algos=["bc"], pairs=["paper:table2", "WD"]))
    with pytest.raises(SweepError, match="has no setting 'betta2'"):
        req = request(algos=["coworld"], pairs=["DC-BP"], grid=["betta2=1,2"])
        sweep.check_settings(req, sweep.expand(req))
    assert main(["sweep", "--algos", "bc", "--pairs", "paper:nope", "--dry-run"]) == 2
    assert "matrix:mw" in capsys.readouterr().err
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert "holds no sweep" in capsys.readouterr().err


def test_slurm_sizes_and_times():
    assert sweep.parse_slurm_time("24:00:00") == 1440
    assert sweep.parse_slurm_time("2-00:00:00") == 2880
    assert sweep.parse_slurm_time("1-12") == 2160
    assert sweep.parse_slurm_time("90") == 90
    assert sweep.parse_slurm_time("30:30") == 31  # 30.5 minutes, rounded up
    with pytest.raises(SweepError):
        sweep.parse_slurm_time("a day")
    assert sweep.parse_mem_gb("64G") == 64 and sweep.parse_mem_gb("64000M") == 62.5
    assert sweep.parse_mem_gb("1T") == 1024 and sweep.parse_mem_gb(None) is None


def test_gpus_are_handed_out_per_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = sweep.local_slots(request(gpus_per_job=2), log=lambda line: None)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]  # one worker per group
    notes = []
    slots = sweep.local_slots(request(jobs=3, gpus_per_job=2), log=notes.append)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3", "0,1"] and notes
    cores = os.cpu_count() or 1
    assert slots[0]["OMP_NUM_THREADS"] == str(max(1, cores // 3))
    with pytest.raises(SweepError, match="--gpus-per-job 8"):
        sweep.local_slots(request(gpus_per_job=8))
    # No GPU for the runs: hidden from them, and the paper preset needs --yes.
    with pytest.raises(SweepError, match="--preset quick"):
        sweep.local_slots(request(gpus_per_job=0))
    slots = sweep.local_slots(request(gpus_per_job=0, jobs=2, preset="quick"))
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["", ""]


def test_one_maker_per_missing_dataset(tmp_path):
    """A job whose dataset is missing waits while another job that needs it runs."""
    jobs = [Job("bc", None, "WD", s) for s in (0, 1)] + [Job("bc", None, "WU", 0)]
    s = sweep.Sweep(request(), tmp_path, jobs, {j.id: str(tmp_path / j.target) for j in jobs})
    queue = [j.id for j in jobs]
    assert s.next_ready(queue, 3) == ["WD/bc/seed0", "WU/bc/seed0"]
    assert queue == ["WD/bc/seed1"]
    s.running["WD/bc/seed0"] = object()
    assert s.next_ready(queue, 3) == []
    (tmp_path / "WD").mkdir()
    (tmp_path / "WD" / "manifest.json").write_text(json.dumps({"status": "complete"}))
    assert s.next_ready(queue, 3) == ["WD/bc/seed1"]


# Real sweeps -----------------------------------------------------------------------------

SMOKE = ["--preset", "smoke", "--set", "eval_every=0", "--jobs", "2"]


def _env(data_root):
    # One thread per run: two runs share this machine's cores.
    return {**os.environ, "COWORLD_BENCH_DATA": str(data_root), "OMP_NUM_THREADS": "1"}


def _cli(data_root, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "coworld_bench.cli", *map(str, args)],
                          capture_output=True, text=True, env=_env(data_root), timeout=timeout)


def _manifest(root):
    try:
        return json.loads((root / "sweep.json").read_text())["jobs"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _wait_for(condition, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("timed out")


def _mid_run(root, jobs):
    """A job running with a checkpoint but no result yet, once another has finished."""
    if not any(e["state"] == "finished" for e in jobs.values()):
        return None
    for job_id, e in jobs.items():
        d = root / job_id
        if e["state"] == "running" and (d / "checkpoint" / "latest.pt").exists() \
                and not (d / "result.json").exists():
            return job_id
    return None


@pytest.fixture(scope="module")
def local_sweep(data_root, tmp_path_factory):
    """2 algorithms x 2 targets x 2 seeds: the sweep and one of its runs are killed
    (kill -9) mid-way, the other running run survives; the same command is re-run."""
    root = tmp_path_factory.mktemp("sweep")
    command = [sys.executable, "-m", "coworld_bench.cli", "sweep", "--algos", "bc,offline-dv2",
               "--pairs", "WD,WU", "--seeds", "0,1", *SMOKE, "--out", str(root)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(data_root), start_new_session=True)
    try:
        killed = _wait_for(lambda: _mid_run(root, _manifest(root)), proc)
    finally:
        before = _manifest(root)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    os.kill(before[killed]["pid"], signal.SIGKILL)
    survivors = [j for j, e in before.items() if e["state"] == "running" and j != killed]
    finished = [j for j, e in before.items() if e["state"] == "finished"]
    assert not (root / killed / "result.json").exists()
    rerun = subprocess.run(command, capture_output=True, text=True, env=_env(data_root),
                           timeout=900)
    return root, command, killed, survivors, finished, rerun


def test_killed_sweep_reruns_only_what_is_missing(local_sweep, data_root):
    root, _, killed, survivors, finished, rerun = local_sweep
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    jobs = _manifest(root)
    assert len(jobs) == 8 and all(e["state"] == "finished" for e in jobs.values()), jobs
    assert all((root / j / "result.json").exists() for j in jobs)
    # The killed run resumed from its checkpoint in a second attempt; the runs finished
    # before the kill were not started again, nor was the survivor (it was waited for).
    log = (root / jobs[killed]["log"]).read_text()
    assert jobs[killed]["attempts"] == 2 and "Resuming" in log, log
    for job_id, entry in jobs.items():
        if job_id != killed:
            assert entry["attempts"] == 1, (job_id, entry)
    assert finished and set(finished) < set(jobs)
    for job_id in survivors:
        assert "Resuming" not in (root / jobs[job_id]["log"]).read_text()
    # A third run of the command starts nothing.
    again = _cli(data_root, *local_sweep[1][3:], timeout=300)
    assert again.returncode == 0 and "0 of 8 jobs to run" in again.stdout, again.stdout
    assert {j: (e["state"], e["attempts"]) for j, e in _manifest(root).items()} == \
        {j: ("finished", e["attempts"]) for j, e in jobs.items()}
    # A run that outlived the killed sweep and finished before the re-run (the race the
    # fixture's survivor may win): the manifest still says running, its process is gone.
    manifest = json.loads((root / "sweep.json").read_text())
    manifest["jobs"][killed].update(state="running", pid=None)
    (root / "sweep.json").write_text(json.dumps(manifest))
    again = _cli(data_root, *local_sweep[1][3:], timeout=300)
    assert again.returncode == 0 and "0 of 8 jobs to run" in again.stdout, again.stdout
    entry = _manifest(root)[killed]
    assert (entry["state"], entry["attempts"]) == ("finished", 2)


def test_failed_job_is_reported_and_the_others_finish(local_sweep, data_root):
    root = local_sweep[0]
    result = _cli(data_root, "sweep", "--algos", "bc", "--pairs", "WD", "--seeds", "2",
                  "--grid", "dataset_dir=default,/nonexistent/dataset", *SMOKE, "--out", root)
    assert result.returncode == 1, result.stdout + result.stderr
    jobs = _manifest(root)
    bad = [e for e in jobs.values() if e["state"] == "failed"]
    assert len(bad) == 1 and bad[0]["variant"] == {"dataset_dir": "/nonexistent/dataset"}
    assert bad[0]["exit_status"] == 2 and "holds no dataset" in bad[0]["error"]
    assert "holds no dataset" in (root / bad[0]["log"]).read_text()
    assert str(root / bad[0]["log"]) in result.stdout
    assert jobs["WD/bc/seed2"]["state"] == "finished"
    status = _cli(data_root, "sweep", "status", root)
    assert status.returncode == 0, status.stderr
    assert "10 jobs: 0 pending, 0 running, 9 finished, 1 failed." in status.stdout
    assert str(root / bad[0]["log"]) in status.stdout
    rows = [line.split() for line in status.stdout.splitlines() if line.startswith(("WD ", "WU "))]
    assert len(rows) == 10
    assert sum("20 / 20" in " ".join(r) and "finished" in r for r in rows) == 9


def test_report_over_the_sweep_has_every_cell(local_sweep, data_root, tmp_path):
    root = local_sweep[0]
    result = _cli(data_root, "report", root, "--out", tmp_path / "report",
                  "--bootstrap-reps", "50", "--embedding", "pca")
    assert result.returncode == 0, result.stderr
    (long_csv,) = (tmp_path / "report" / "tables").glob("dmc_*_long.csv")
    cells = {(r["algo"], r["column"]): int(r["n_seeds"])
             for r in csv.DictReader(long_csv.read_text().splitlines())}
    # Every finished run of the sweep (the module's other tests may have added some).
    finished = {}
    for entry in _manifest(root).values():
        if entry["state"] == "finished":
            cell = (entry["algo"], entry["target"])
            finished[cell] = finished.get(cell, 0) + 1
    assert cells == finished
    assert {k: v for k, v in cells.items() if k != ("bc", "WD")} == {
        ("bc", "WU"): 2, ("offline-dv2", "WD"): 2, ("offline-dv2", "WU"): 2}


def _children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_submitit_sweep_with_a_requeue(data_root, tmp_path):
    """The cluster code path with submitit's local executor: one submitit job per run;
    one job gets the preemption signal (SIGUSR2, as SLURM sends it), checkpoints, is
    requeued by submitit and resumes."""
    root = tmp_path / "sweep"
    command = [sys.executable, "-m", "coworld_bench.cli", "sweep", "--executor",
               "submitit-local", "--algos", "bc,offline-dv2", "--pairs", "WD,WU", "--seeds",
               "3", *SMOKE, "--out", str(root)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(data_root), start_new_session=True)
    try:
        def preemptible():
            for job_id, e in _manifest(root).items():
                d = root / job_id
                if e.get("submitit_job_id") and (d / "checkpoint" / "latest.pt").exists() \
                        and not (d / "result.json").exists():
                    tasks = _children(int(e["submitit_job_id"]))  # the controller's task
                    if tasks:
                        return job_id, tasks[0]
            return None

        job_id, task = _wait_for(preemptible, proc)
        os.kill(task, signal.SIGUSR2)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out + err
    jobs = _manifest(root)
    assert len(jobs) == 4 and all(e["state"] == "finished" for e in jobs.values())
    assert all(e["executor"] == "submitit-local" and e["submitit_job_id"] for e in jobs.values())
    assert len({e["submitit_job_id"] for e in jobs.values()}) == 4  # a real job per run
    log = (root / jobs[job_id]["log"]).read_text()
    assert jobs[job_id]["attempts"] == 2, log
    assert "requeued" in log and "Resuming" in log
    assert "Requeued job" in Path(jobs[job_id]["submitit_log"]).read_text()
    for other, entry in jobs.items():
        if other != job_id:
            assert entry["attempts"] == 1


def test_slurm_job_array_submission(tmp_path, monkeypatch):
    """The SLURM path up to sbatch (a stand-in sbatch records the script): one job array
    with the asked resources, the preemption signal, the setup lines and each job's
    array id in the manifest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/script.sh\n"
                                    "echo Submitted batch job 4242\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    req = request(algos=["bc"], pairs=["WD"], seeds=[0, 1, 2], preset="smoke",
                  executor="slurm", jobs=2, cpus_per_job=8, slurm_partition="gpu",
                  slurm_time="2-00:00:00", slurm_mem="64G", slurm_setup=["source venv/bin/activate"],
                  out=str(tmp_path / "sweep"))
    jobs = sweep.expand(req)
    s = sweep.Sweep(req, tmp_path / "sweep", jobs, log=lambda line: None)
    s.open()
    try:
        executor, cluster = s._executor()
        s._submit(executor, cluster, [j.id for j in jobs])
    finally:
        s.close()
    script = (tmp_path / "script.sh").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --time=2880",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB",
                 "#SBATCH --signal=USR2@90", "source venv/bin/activate"):
        assert line in script, script
    manifest = _manifest(tmp_path / "sweep")
    assert [manifest[j.id]["submitit_job_id"] for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    assert all(manifest[j.id]["state"] == "pending" for j in jobs)


def test_rerun_with_other_settings_is_refused_before_any_start(local_sweep, data_root):
    """The sweep's command again with a new --set: its finished runs hold other settings.
    Refused at once, naming a run and what differs; no job is started, no log grows."""
    root, command = local_sweep[0], local_sweep[1]
    before = _manifest(root)
    logs = {p: p.stat().st_size for p in (root / "logs").iterdir()}
    result = _cli(data_root, *command[3:], "--set", "log_every=7", timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "of the sweep's runs already exist" in result.stderr
    assert "nothing was started" in result.stderr and "log_every: " in result.stderr
    assert {j: e["attempts"] for j, e in _manifest(root).items()} == \
        {j: e["attempts"] for j, e in before.items()}
    assert {p: p.stat().st_size for p in (root / "logs").iterdir()} == logs

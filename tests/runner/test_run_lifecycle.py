"""The run lifecycle through the real CLI: files, no retraining, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

SMOKE = ["run", "--algo", "bc", "--target", "DC", "--preset", "smoke", "--seed", "3", "--quiet",
         "--set", "random_baseline=true"]


def run_dir(out):
    return out / "DC" / "bc" / "seed3"


@pytest.fixture(scope="module")
def own_root(tmp_path_factory):
    """This module's data root: its first run must make the dataset itself."""
    return tmp_path_factory.mktemp("lifecycle-data")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, own_root):
    out = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", *SMOKE, "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_directory_has_every_file(finished):
    out, result = finished
    d = run_dir(out)
    assert "Estimated wall time on this device (cpu)" in result.stdout
    assert "generating it" in result.stdout  # the missing dataset was made, with a message
    config = json.loads((d / "config.json").read_text())
    assert config["algo"] == "bc" and config["target"] == "mw-drawer-close" and config["seed"] == 3
    assert config["config"]["train_steps"] == 20 and config["preset"] == "smoke"
    for package in ("coworld-bench", "torch", "mujoco", "metaworld", "dm_control", "robodesk"):
        assert config["versions"][package] not in (None, "not installed")
    assert "git_commit" in config
    metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20] and all("bc_loss" in m for m in metrics)
    evals = [json.loads(line) for line in (d / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [10, 20] and evals[-1]["final"]
    for e in evals:
        assert len(e["returns"]) == 1 and e["mean"] == pytest.approx(np.mean(e["returns"]))
        assert e["std"] == pytest.approx(np.std(e["returns"])) and len(e["success"]) == 1
    ckpt = torch.load(d / "checkpoint" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 20 and {"encoder", "actor"} <= set(ckpt["algorithm"])
    result = json.loads((d / "result.json").read_text())
    assert result["steps"] == 20 and result["final"]["mean"] == evals[-1]["mean"]
    with np.load(d / "value_trace.npz", allow_pickle=False) as trace:
        assert trace["reward"].shape == (1, 500) and trace["value"].shape == (1, 500)
        g = trace["discounted_return"][0]
        r = trace["reward"][0]
        assert g[-1] == pytest.approx(r[-1]) and g[-2] == pytest.approx(r[-2] + 0.99 * g[-1])
        assert np.isnan(trace["value"]).all()  # behaviour cloning has no critic
    assert list((d / "tb").glob("events.out.tfevents.*"))


def test_wall_time_estimate_within_twice_the_actual(finished):
    """The estimate printed once the first updates are timed (after the evaluation workers
    are up; the evaluations the schedule has, not one more) against the run's own wall
    time (smoke: 20 updates, 2 evaluations of 1 episode of 500 steps)."""
    out, result = finished
    [line] = [x for x in result.stdout.splitlines() if x.startswith("Estimated wall time")]
    assert "+ 2 evaluations x 1 round of episodes x 500 steps" in line, line
    record = json.loads((run_dir(out) / "result.json").read_text())
    estimate, actual = record["estimated_wall_time_s"], record["wall_time_s"]
    assert actual / 2 <= estimate <= 2 * actual, (estimate, actual)


def test_random_action_return_beside_the_final_return(finished, own_root):
    """The run prints (and keeps) uniformly random actions' return on its final
    evaluation's seeds and env options, computed once into the data root's cache."""
    from coworld_bench.evaluation import random_action_baseline, random_action_returns

    out, result = finished
    random = json.loads((run_dir(out) / "result.json").read_text())["random_action"]
    assert "(seed 3, evaluation point 2)" in result.stdout
    assert (f"Uniformly random actions on the same evaluation seeds: {random['mean']:.1f} ± "
            f"{random['std']:.1f}.") in result.stdout
    [cache] = (own_root / "random-actions").glob("mw-drawer-close-seed3-*.json")
    key = json.loads(cache.read_text())["key"]
    assert (key["episodes"], key["seed"], key["eval_index"]) == (1, 3, 2)
    assert key["env_options"]["fast_render"] is True and key["env_options"]["action_dim"] == 4
    # The same numbers from the simulator directly, on the final evaluation's seeds.
    direct = random_action_returns("mw-drawer-close", 1, seed=3, eval_index=2,
                                   **key["env_options"])
    assert random["returns"] == direct and random["mean"] == pytest.approx(np.mean(direct))
    again = random_action_baseline("mw-drawer-close", 1, 3, 2, cache_dir=cache.parent,
                                   **key["env_options"])
    assert again["cached"] and again["returns"] == direct
    cache.write_text("{torn")  # unreadable: computed again and rewritten
    fresh = random_action_baseline("mw-drawer-close", 1, 3, 2, cache_dir=cache.parent,
                                   **key["env_options"])
    assert not fresh["cached"] and fresh["returns"] == direct
    assert json.loads(cache.read_text())["result"]["returns"] == direct


def test_second_run_does_not_retrain(finished, cli, own_root):
    out, _ = finished
    d = run_dir(out)
    # The lock file records the last process that held it; nothing else is touched.
    files = lambda: {p.name: p.stat().st_mtime_ns for p in d.iterdir()  # noqa: E731
                     if p.is_file() and p.name != "run.lock"}
    before = files()
    result = cli(*SMOKE, "--out", out, env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode == 0, result.stderr
    assert "is finished" in result.stdout and "--force" in result.stdout
    assert files() == before


def test_sigkill_then_resume_matches_uninterrupted(finished, tmp_path, own_root):
    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    command = [sys.executable, "-m", "coworld_bench.cli", *SMOKE, "--out", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    ckpt = run_dir(tmp_path) / "checkpoint" / "latest.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir(tmp_path) / "result.json").exists()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < 20
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"Resuming {run_dir(tmp_path)} from step {killed_at}" in result.stdout
    resumed = json.loads((run_dir(tmp_path) / "result.json").read_text())
    assert resumed["final"]["returns"] == reference["final"]["returns"]
    assert resumed["eval_curve"] == reference["eval_curve"]
    metrics = lambda d: [{k: v for k, v in json.loads(line).items() if k != "wall_time"}  # noqa
                         for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics(run_dir(tmp_path)) == metrics(run_dir(out))
    a = torch.load(run_dir(tmp_path) / "checkpoint" / "latest.pt", weights_only=True)
    b = torch.load(run_dir(out) / "checkpoint" / "latest.pt", weights_only=True)
    for part in ("encoder", "actor"):
        for key, value in b["algorithm"][part].items():
            assert torch.equal(a["algorithm"][part][key], value), (part, key)


def test_changed_config_is_refused(finished, cli, own_root):
    out, _ = finished
    result = cli(*SMOKE, "--out", out, "--set", "lr=0.001",
                 env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode != 0
    assert "different config" in result.stderr and "lr" in result.stderr


def test_eval_command(finished, cli):
    out, _ = finished
    result = cli("eval", run_dir(out), "--episodes", "1")
    assert result.returncode == 0, result.stderr
    reference = json.loads((run_dir(out) / "result.json").read_text())
    # Same checkpoint, deterministic policy: a fixed episode seed gives a fixed score.
    assert "at step 20" in result.stdout and "over 1 episodes" in result.stdout
    assert cli("eval", run_dir(out), "--episodes", "1").stdout == result.stdout
    assert reference["final"]["mean"] is not None
    # Episodes side by side in two simulator processes give what one after another gives.
    side_by_side = cli("eval", run_dir(out), "--episodes", "2", "--eval-workers", "2")
    one_by_one = cli("eval", run_dir(out), "--episodes", "2", "--eval-workers", "1")
    assert side_by_side.returncode == 0, side_by_side.stderr
    assert side_by_side.stdout == one_by_one.stdout and "over 2 episodes" in one_by_one.stdout
    first = result.stdout.split("returns ")[1].splitlines()[0].strip()
    assert one_by_one.stdout.split("returns ")[1].split(", ")[0] == first  # the same seed
    assert "held-out seeds" in result.stdout  # why it differs from the run's final score


def test_paper_preset_on_cpu_prints_hint_and_estimate(finished, cli, own_root, tmp_path):
    """`run` without --preset is the paper preset; on a CPU (with --yes) it says how to
    ask for quick before training, then prints an estimate from measured update times."""
    dataset = own_root / "mw-drawer-close" / "random-random-2ep-seed0-fast-noaa"
    result = cli("run", "--algo", "bc", "--target", "DC", "--quiet", "--out", tmp_path, "--yes",
                 "--set", f"dataset_dir={dataset}", "--set", "fast_render=true",
                 "--set", "antialias=false", "--set", "train_steps=7", "--set", "eval_episodes=1",
                 "--set", "checkpoint_every=7")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "--preset quick" in out and "Estimated wall time on this device (cpu)" in out
    assert out.index("--preset quick") < out.index("Estimated wall time")
    config = json.loads((tmp_path / "DC" / "bc" / "seed0" / "config.json").read_text())
    assert config["preset"] == "paper" and config["config"]["batch_size"] == 256


# Lifecycle defects found by a new user's probe --------------------------------------

def _popen(args, env):
    return subprocess.Popen([sys.executable, "-m", "coworld_bench.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _wait_for(predicate, proc, seconds=300):
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert predicate()


def test_paper_preset_on_cpu_refuses_before_generating_anything(cli, tmp_path):
    """The default (paper) preset on a CPU asks for --yes, naming the two commands,
    before any dataset generation or run directory."""
    data = tmp_path / "empty-data-root"
    data.mkdir()
    result = cli("run", "--algo", "bc", "--target", "DC", "--out", tmp_path / "runs",
                 env_extra={"COWORLD_BENCH_DATA": str(data)})
    assert result.returncode == 2, result.stderr
    assert "--preset quick" in result.stderr and "--yes" in result.stderr
    assert "generating its random" not in result.stderr and "target dataset" in result.stderr
    assert list(data.iterdir()) == [] and not (tmp_path / "runs" / "DC").exists()
    assert "Traceback" not in result.stderr


def test_two_processes_on_one_run_directory(own_root, tmp_path):
    """The second exits 2 naming the process that holds the lock; the lock dies with
    the process that held it."""
    from coworld_bench.status import is_locked

    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    args = [*SMOKE, "--out", str(tmp_path), "--set", "train_steps=100000"]
    first = _popen(args, env)
    d = run_dir(tmp_path)
    try:
        _wait_for(lambda: (d / "metrics.jsonl").exists(), first)
        assert is_locked(d)
        second = subprocess.run([sys.executable, "-m", "coworld_bench.cli", *args],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert f"process {first.pid}" in second.stderr and "run.lock" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not is_locked(d)


def test_sigint_writes_a_checkpoint_and_resume_matches_uninterrupted(own_root, tmp_path, cli):
    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    args = [*SMOKE, "--set", "train_steps=300", "--set", "checkpoint_every=1000",
            "--set", "eval_every=0"]
    reference = cli(*args, "--out", tmp_path / "reference",
                    env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert reference.returncode == 0, reference.stderr
    proc = _popen([*args, "--out", str(tmp_path / "interrupted")], env)
    d = run_dir(tmp_path / "interrupted")
    _wait_for(lambda: (d / "metrics.jsonl").exists(), proc)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Interrupted at update" in err and "Re-run the same command to resume" in err
    assert "Traceback" not in err
    step = torch.load(d / "checkpoint" / "latest.pt", weights_only=True)["step"]
    assert 0 < step < 300 and f"update {step} of 300" in err
    resumed = cli(*args, "--out", tmp_path / "interrupted",
                  env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {step}" in resumed.stdout
    final = lambda root: json.loads((run_dir(root) / "result.json").read_text())["final"]  # noqa
    assert final(tmp_path / "interrupted")["returns"] == final(tmp_path / "reference")["returns"]


def test_torn_checkpoint_falls_back_to_the_previous_one(finished, tmp_path, cli, own_root):
    import shutil

    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    d = run_dir(tmp_path)
    shutil.copytree(run_dir(out), d)
    for name in ("result.json", "value_trace.npz"):
        (d / name).unlink()
    latest = d / "checkpoint" / "latest.pt"
    assert torch.load(d / "checkpoint" / "previous.pt", weights_only=True)["step"] == 15
    latest.write_bytes(latest.read_bytes()[:1000])  # torn by a kill mid-write
    result = cli(*SMOKE, "--out", tmp_path, env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode == 0, result.stderr
    assert f"{latest} cannot be loaded" in result.stderr and "from step 15" in result.stdout
    resumed = json.loads((d / "result.json").read_text())
    assert resumed["final"]["returns"] == reference["final"]["returns"]
    # Both unreadable: one line naming the files and the fix.
    for name in ("latest.pt", "previous.pt"):
        (d / "checkpoint" / name).write_bytes(b"not a checkpoint")
    (d / "result.json").unlink()
    result = cli(*SMOKE, "--out", tmp_path, env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "latest.pt" in result.stderr and "previous.pt" in result.stderr
    assert "--force" in result.stderr


def test_corrupt_config_names_the_file(finished, tmp_path, cli, own_root):
    import shutil

    out, _ = finished
    d = run_dir(tmp_path)
    shutil.copytree(run_dir(out), d)
    (d / "config.json").write_text('{"algo": "bc", \x01')
    result = cli(*SMOKE, "--out", tmp_path, env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(d / "config.json") in result.stderr and "--force" in result.stderr
    status = cli("status", tmp_path)
    assert status.returncode == 0 and "broken" in status.stdout


def test_dataset_of_another_task_is_refused(own_root, cli, tmp_path):
    dataset = own_root / "mw-drawer-close" / "random-random-2ep-seed0-fast-noaa"
    assert (dataset / "manifest.json").exists()
    result = cli("run", "--algo", "bc", "--target", "BP", "--preset", "smoke", "--out", tmp_path,
                 "--set", f"dataset_dir={dataset}")
    assert result.returncode == 2
    assert "mw-drawer-close data" in result.stderr and "mw-button-press" in result.stderr
    result = cli("run", "--algo", "bc", "--target", "DC", "--preset", "smoke", "--out", tmp_path,
                 "--set", f"dataset_dir={dataset}", "--set", "fast_render=false")
    assert result.returncode == 2 and "fast_render=true" in result.stderr
    # The smoke preset's data are rendered without anti-aliasing; the paper preset's
    # evaluation would anti-alias.
    assert json.loads((dataset / "manifest.json").read_text())["env"]["antialias"] is False
    result = cli("run", "--algo", "bc", "--target", "DC", "--preset", "smoke", "--out", tmp_path,
                 "--set", f"dataset_dir={dataset}", "--set", "antialias=true")
    assert result.returncode == 2 and "--set antialias=false" in result.stderr
    assert not (tmp_path / "DC").exists() and not (tmp_path / "BP").exists()


def test_out_that_is_a_file_or_read_only(cli, tmp_path, own_root):
    env = {"COWORLD_BENCH_DATA": str(own_root)}
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli(*SMOKE, "--out", blocker, env_extra=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is a file" in result.stderr and "--out" in result.stderr
    # Read-only: an immutable folder (chattr +i holds even for root, who ignores modes).
    locked = tmp_path / "read-only"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: no read-only folder")
    try:
        result = cli(*SMOKE, "--out", locked, env_extra=env)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "permission denied" in result.stderr or "not writable" in result.stderr


def test_status_lists_finished_and_unfinished_runs(finished, cli, tmp_path):
    import shutil

    out, _ = finished
    shutil.copytree(run_dir(out), run_dir(tmp_path / "copy"))
    (run_dir(tmp_path / "copy") / "result.json").unlink()
    for root, state, progress in ((out, "finished", "20 / 20"),
                                  (tmp_path / "copy", "unfinished", "20 / 20")):
        result = cli("status", root)
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stdout.splitlines() if line.startswith("DC "))
        assert "bc" in line and state in line and progress in line and "smoke" in line


def test_run_prints_its_directory_first(finished):
    _, result = finished
    assert result.stdout.splitlines()[0] == f"Run directory: {run_dir(finished[0])}"


def test_final_evaluation_redone_after_the_last_checkpoint_scores_the_same(finished, tmp_path,
                                                                             own_root):
    """A run stopped during its final evaluation (result.json not yet written) resumes at
    train_steps and redoes that evaluation on the same seeds: the schedule fixes its index
    (smoke: an evaluation at 10, the final one at 20 is point 2, not 3)."""
    import shutil

    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    copy = run_dir(tmp_path)
    shutil.copytree(run_dir(out), copy)
    (copy / "result.json").unlink()
    lines = (copy / "eval.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]).get("final")
    (copy / "eval.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    env = {**os.environ, "COWORLD_BENCH_DATA": str(own_root)}
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", *SMOKE,
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    redone = json.loads((copy / "result.json").read_text())
    assert redone["final"]["returns"] == reference["final"]["returns"]
    assert redone["random_action"]["returns"] == reference["random_action"]["returns"]


def test_status_shows_a_run_with_a_bad_evaluation_line_as_broken(finished, cli, tmp_path):
    """One unreadable record (``{"step": 1}``, no mean) makes that run broken, with the
    reason; the table of the others is still printed, each row with its directory."""
    import shutil

    out, _ = finished
    good, bad = tmp_path / "good", tmp_path / "bad"
    shutil.copytree(run_dir(out), run_dir(good))
    shutil.copytree(run_dir(out), run_dir(bad))
    (run_dir(bad) / "eval.jsonl").write_text('{"step": 1}\n')
    result = cli("status", tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("DC ")]
    assert len(lines) == 2
    [broken] = [line for line in lines if "bad/DC/bc/seed3" in line]
    [fine] = [line for line in lines if "good/DC/bc/seed3" in line]
    assert "broken" in broken and "finished" in fine
    assert "record 1 has no numeric 'mean'" in result.stdout


def test_a_partial_dataset_is_completed_before_training(finished, cli, tmp_path, own_root):
    """An interrupted collection leaves a manifest marked partial (here: the first of
    the smoke dataset's 2 episodes). A run resumes the collection, then learns from the
    complete dataset, identical to one never interrupted, and scores as the run that
    had it whole; given as dataset_dir, a partial dataset is refused, named."""
    import shutil

    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    name = "mw-drawer-close/random-random-2ep-seed0-fast-noaa"
    whole = json.loads((own_root / name / "manifest.json").read_text())
    root = tmp_path / "data"
    shutil.copytree(own_root / name, root / name)
    dataset = root / name
    kept, dropped = whole["episodes"][0], whole["episodes"][1]
    (dataset / dropped["file"]).unlink()
    partial = {**whole, "episodes": [kept], "episode_count": 1, "step_count": kept["steps"],
               "status": "partial", "stop_reason": None}
    (dataset / "manifest.json").write_text(json.dumps(partial))
    result = cli(*SMOKE, "--out", tmp_path / "given", "--set", f"dataset_dir={dataset}",
                 env_extra={"COWORLD_BENCH_DATA": str(root)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{dataset}: the dataset is partial (1 episodes of at most 2)" in result.stderr
    verify = cli("data", "verify", dataset)
    assert verify.returncode != 0 and "partial" in verify.stderr
    result = cli(*SMOKE, "--out", tmp_path / "runs", env_extra={"COWORLD_BENCH_DATA": str(root)})
    assert result.returncode == 0, result.stderr
    assert f"The target dataset is partial: resuming its collection in {dataset}" in result.stdout
    completed = json.loads((dataset / "manifest.json").read_text())
    assert completed["status"] == "complete"
    assert [e["sha256"] for e in completed["episodes"]] == [e["sha256"] for e in whole["episodes"]]
    resumed = json.loads((run_dir(tmp_path / "runs") / "result.json").read_text())
    assert resumed["final"]["returns"] == reference["final"]["returns"]


def test_non_finite_data_is_refused_and_training_stops_at_its_first_non_finite_update(
        finished, cli, tmp_path, own_root):
    """A NaN reward (checksums made to match, as a faulty writer would) fails `data verify`
    and the run, naming file, key and row; a run that diverges after a good checkpoint
    stops at its first non-finite update, naming it, the loss term and that checkpoint,
    which stays the one resumed (the re-run stops the same way, never in the simulator)."""
    import re
    import shutil

    from coworld_bench.data.format import sha256_file

    name = "mw-drawer-close/random-random-2ep-seed0-fast-noaa"
    dataset = tmp_path / "data" / name
    shutil.copytree(own_root / name, dataset)
    manifest = json.loads((dataset / "manifest.json").read_text())
    entry = manifest["episodes"][1]
    with np.load(dataset / entry["file"], allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["reward"][5] = np.nan
    np.savez(dataset / entry["file"], **arrays)
    entry["sha256"] = sha256_file(dataset / entry["file"])
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    said = f"{dataset / entry['file']}: 'reward' holds a non-finite value (nan) at row 5"
    verify = cli("data", "verify", dataset)
    assert verify.returncode == 2 and said in verify.stderr, verify.stderr
    result = cli(*SMOKE, "--out", tmp_path / "on-nan", "--set", f"dataset_dir={dataset}",
                 env_extra={"COWORLD_BENCH_DATA": str(own_root)})
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr

    out, _ = finished
    run = run_dir(tmp_path / "diverged")
    shutil.copytree(run_dir(out), run)
    (run / "result.json").unlink()
    good = torch.load(run / "checkpoint" / "previous.pt", weights_only=True)
    assert good["step"] == 15
    for optimizer in good["algorithm"]["optimizers"].values():
        for group in optimizer["param_groups"]:
            group["lr"] = 1e30  # the updates after update 15 diverge
    torch.save(good, run / "checkpoint" / "latest.pt")
    (run / "checkpoint" / "previous.pt").unlink()
    saved = (run / "checkpoint" / "latest.pt").read_bytes()
    for attempt in range(2):
        result = cli(*SMOKE, "--out", tmp_path / "diverged",
                     env_extra={"COWORLD_BENCH_DATA": str(own_root)})
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert re.search(r"Update 1[6-9]: bc_loss is (nan|inf|-inf) \(not finite\); training "
                         r"stopped and the last good checkpoint, update 15 ", result.stderr), \
            result.stderr
        assert str(run / "checkpoint" / "latest.pt") in result.stderr
        assert (run / "checkpoint" / "latest.pt").read_bytes() == saved
        assert not (run / "result.json").exists()
        assert all(json.loads(line)["step"] <= 15
                   for line in (run / "metrics.jsonl").read_text().splitlines())


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only; elsewhere the test is skipped), unmounted after."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_then_a_read_only_one_then_space_freed(finished, cli, small_disk, own_root):
    """--out on a 2 MB tmpfs: the first checkpoint (1.6 MB) does not fit. One line names the
    checkpoint; status claims no step that was not saved; no temporary file is left. The
    same folder read-only: one line again. With space, the re-run finishes with the
    uninterrupted run's result."""
    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    env = {"COWORLD_BENCH_DATA": str(own_root)}
    result = cli(*SMOKE, "--out", small_disk, env_extra=env)
    latest = run_dir(small_disk) / "checkpoint" / "latest.pt"
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {latest}: No space left on device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(small_disk.rglob("*.tmp")) and not latest.exists()
    status = cli("status", small_disk)
    [row] = [line for line in status.stdout.splitlines() if line.startswith("DC ")]
    assert "0 / 20" in row and "unfinished" in row, status.stdout
    assert "no checkpoint yet" in status.stdout
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)]).returncode == 0
    result = cli(*SMOKE, "--out", small_disk, env_extra=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{run_dir(small_disk)} is not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # A read-only data root, found only when the missing dataset is to be made.
    result = cli(*SMOKE, "--out", small_disk.parent / "elsewhere",
                 env_extra={"COWORLD_BENCH_DATA": str(small_disk / "data")})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {small_disk / 'data'}" in result.stderr
    assert "Read-only file system" in result.stderr and "remount it writable" in result.stderr
    assert subprocess.run(["mount", "-o", "remount,rw,size=64m", str(small_disk)]).returncode == 0
    stale = latest.parent / ".latest.pt.killed.tmp"  # as a SIGKILL mid-write leaves it
    stale.write_bytes(b"torn")
    result = cli(*SMOKE, "--out", small_disk, env_extra=env)
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    resumed = json.loads((run_dir(small_disk) / "result.json").read_text())
    assert resumed["final"]["returns"] == reference["final"]["returns"]


def _progress(paths):
    """What the run has written so far (name, size, mtime of its data and run files; not
    the lock, the config rewritten at each start or TensorBoard's events)."""
    state = {}
    for root in paths:
        for p in root.rglob("*"):
            if p.is_file() and p.name not in ("run.lock", "config.json", ".collect.lock") \
                    and "tb" not in p.relative_to(root).parts:
                st = p.stat()
                state[str(p)] = (st.st_size, st.st_mtime_ns)
    return state


def test_fault_injection_kills_at_random_points_resume_to_the_same_data_and_result(
        finished, tmp_path, own_root):
    """The smoke run on an empty data root (it makes its dataset, then trains), SIGKILLed
    again and again: first at a random delay (0-1 s) after it takes the collection lock,
    then at a random delay (0-1.5 s) after each new file or write of the training
    (mid-update, mid-evaluation, mid-checkpoint). After every kill the same command resumes. At the end the dataset
    equals the uninterrupted one file for file and the run's result, curve and metrics
    equal the uninterrupted run's."""
    import random

    out, _ = finished
    reference = json.loads((run_dir(out) / "result.json").read_text())
    name = "mw-drawer-close/random-random-2ep-seed0-fast-noaa"
    root = tmp_path / "data"
    dataset, run = root / name, run_dir(tmp_path / "runs")
    env = {**os.environ, "COWORLD_BENCH_DATA": str(root)}
    command = [sys.executable, "-m", "coworld_bench.cli", *SMOKE, "--out", str(tmp_path / "runs")]
    rng = random.Random(20261207)
    kills = {"collection": 0, "training": 0}

    def collected():
        manifest = dataset / "manifest.json"
        return manifest.exists() and json.loads(manifest.read_text())["status"] == "complete"

    def collecting(pid: int) -> bool:
        """Process ``pid`` holds the collection lock (the holder writes its pid there)."""
        try:
            return (dataset / ".collect.lock").read_text().startswith(f"process {pid} ")
        except OSError:
            return False

    for attempt in range(60):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env, start_new_session=True)
        if not collected() and kills["collection"] < 8:
            # Once this process holds the dataset's collection lock, at a random delay
            # (0-1 s): mid-episode, whatever the machine's speed.
            deadline = time.time() + 300
            while not (collecting(proc.pid) or collected()) and proc.poll() is None \
                    and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
            phase = "training" if collected() else "collection"
        elif kills["collection"] + kills["training"] < 22:
            phase, before = "training", _progress([run])
            deadline = time.time() + 300
            while _progress([run]) == before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            break
        if proc.poll() is not None:  # ended before the kill: finished (or failed)
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills[phase] += 1
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert kills["collection"] >= 3 and sum(kills.values()) >= 20, kills
    whole = json.loads((own_root / name / "manifest.json").read_text())
    made = json.loads((dataset / "manifest.json").read_text())
    assert made["status"] == "complete"
    assert [e["sha256"] for e in made["episodes"]] == [e["sha256"] for e in whole["episodes"]]
    assert sorted(p.name for p in dataset.iterdir()) == sorted(
        p.name for p in (own_root / name).iterdir())
    result = json.loads((run / "result.json").read_text())
    assert result["final"]["returns"] == reference["final"]["returns"]
    assert result["eval_curve"] == reference["eval_curve"]
    metrics = lambda d: [{k: v for k, v in json.loads(line).items() if k != "wall_time"}  # noqa
                         for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert metrics(run) == metrics(run_dir(out))
    assert not list(run.rglob("*.tmp")) and not list(dataset.glob(".*.tmp"))

"""``--logger wandb``: a real smoke run logged to an offline wandb run, read back from
disk with wandb's own reader (``wandb leet inspect``) and checked against the run's
TensorBoard events and result.json; the sweep passing the flag on; the error when
wandb is not installed."""

import json
import re
import subprocess
import sys

import pytest

from coworld_bench.errors import UserError
from coworld_bench.logging_backends import WANDB_ID_FILE, WANDB_INSTALL, open_logger

pytest.importorskip("wandb")


def wandb_env(tmp_path) -> dict[str, str]:
    """Offline and quiet, with wandb's own settings and caches in the test's folder."""
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
            "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}


def inspect(path, *flags) -> str:
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json",
                             *flags, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)}
            for tag in events.Tags()["scalars"]}


def test_smoke_run_mirrors_tensorboard_to_an_offline_wandb_run(cli, tmp_path):
    from coworld_bench import sweep
    from coworld_bench.protocol import protocol_hash

    out = tmp_path / "runs"
    result = cli("run", "--algo", "bc", "--target", "WW", "--preset", "smoke", "--quiet",
                 "--logger", "wandb", "--out", out, env_extra=wandb_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = out / "WW" / "bc" / "seed0"
    final = json.loads((run_dir / "result.json").read_text())
    run_id = (run_dir / WANDB_ID_FILE).read_text()
    # The offline run lies inside the run directory, under the id the run keeps.
    [log] = run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")

    state = json.loads(inspect(log, "--summary"))
    assert (state["run_id"], state["name"], state["exit_code"]) == (run_id, "WW/bc/seed0", 0)
    config = state["config"]
    assert (config["algo"], config["seed"], config["preset"]) == ("bc", 0, "smoke")
    assert config["config"]["train_steps"] == final["config"]["train_steps"]
    assert config["protocol_hash"] == protocol_hash() == final["protocol"]["hash"]
    summary = state["summary"]
    assert summary["final/return"] == pytest.approx(final["final"]["mean"])
    assert summary["final/return_std"] == pytest.approx(final["final"]["std"])
    assert summary["final/steps"] == final["steps"]

    records = [json.loads(line) for line in inspect(log).splitlines()]
    [run_record] = [r["run"] for r in records if r["type"] == "run"]
    assert run_record["run_group"] == "WW/bc"
    history: dict[str, dict[int, float]] = {}
    for record in records:
        if record["type"] == "history":
            step = int(record["history"]["step"]["num"])
            for tag, value in record["history"]["item"].items():
                if not tag.startswith("_"):
                    history.setdefault(tag, {})[step] = value
    board = tensorboard_scalars(run_dir / "tb")
    assert {"train/bc_loss", "eval/return"} <= set(board)
    assert set(history) == set(board)
    for tag, points in board.items():
        assert set(history[tag]) == set(points), tag
        for step, value in points.items():  # TensorBoard keeps float32
            assert history[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-6), (tag, step)
    assert history["eval/return"][final["steps"]] == pytest.approx(final["final"]["mean"])

    # A sweep re-run over this run, with or without the flag, finds no other settings.
    for logger in ("tensorboard", "wandb"):
        request = sweep.SweepRequest(algos=["bc"], pairs=["WW"], seeds=[0], preset="smoke",
                                     out=str(out), logger=logger)
        sweep.check_existing_runs(request, sweep.expand(request))


def test_resumed_session_continues_the_same_wandb_run(tmp_path, monkeypatch):
    """Two sessions in one run directory (a kill between them) log to one wandb run
    id; TensorBoard's events stay in tb/."""
    for key, value in wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "WW" / "bc" / "seed0"
    run_dir.mkdir(parents=True)
    first = open_logger("wandb", run_dir, run_dir / "tb", config={"seed": 0})
    first.scalar("train/loss", 1.0, 5)
    first.close(failed=True)  # killed: a re-run resumes
    second = open_logger("wandb", run_dir, run_dir / "tb", purge_step=6, config={"seed": 0})
    second.scalar("train/loss", 0.5, 10)
    second.close(summary={"final/return": 3.0})
    run_id = (run_dir / WANDB_ID_FILE).read_text()
    logs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert [p.name for p in logs] == [f"run-{run_id}.wandb"] * 2
    states = [json.loads(inspect(p, "--summary")) for p in logs]
    assert [s["exit_code"] for s in states] == [1, 0]
    assert states[1]["summary"]["final/return"] == 3.0
    assert tensorboard_scalars(run_dir / "tb")["train/loss"] == {5: 1.0, 10: 0.5}


def test_sweep_passes_the_logger_to_every_run(tmp_path, capsys):
    from coworld_bench.cli import main

    assert main(["sweep", "--algos", "bc", "--pairs", "WW", "--seeds", "0", "--preset", "smoke",
                 "--logger", "wandb", "--out", str(tmp_path / "sweep"), "--dry-run"]) == 0
    command = capsys.readouterr().out.split("Each job is one run command, e.g.:")[1]
    assert "--logger wandb" in command
    assert main(["sweep", "--algos", "bc", "--pairs", "WW", "--seeds", "0", "--preset", "smoke",
                 "--out", str(tmp_path / "sweep"), "--dry-run"]) == 0
    assert "--logger" not in capsys.readouterr().out


def test_missing_wandb_names_the_install_command(tmp_path, monkeypatch, capsys):
    from coworld_bench.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails
    with pytest.raises(UserError, match=re.escape(WANDB_INSTALL)):
        open_logger("wandb", tmp_path, tmp_path / "tb", config={})
    assert not (tmp_path / "tb").exists()  # no TensorBoard writer left open
    # The run refuses before it makes anything.
    assert main(["run", "--algo", "bc", "--target", "WW", "--preset", "smoke", "--quiet",
                 "--logger", "wandb", "--out", str(tmp_path / "runs")]) == 2
    assert WANDB_INSTALL in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Headless rendering must be chosen before any simulator is imported.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each (and in every run they start), not two
    # OpenMP pools spinning against each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the README's command) a module's
    tests stay on one worker, so its module fixtures are made once, and the tests that
    read the shared runs go together. It must run before xdist's own hook, which reads
    the ``xdist_group`` marks into the test ids the scheduler groups by: run after it,
    the marks are ignored and a second worker waits minutes for the first one's runs."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        shared = "shared_runs" in item.fixturenames or item.get_closest_marker("shared_runs")
        group = "shared-runs" if shared else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


def session_folder(tmp_path_factory, name: str) -> Path:
    """A folder for the whole session: under pytest-xdist, beside the workers' own
    temporary folders, so that every worker finds the same one."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def one_thread():
    """torch on one intra-op thread during the test (the setting restored after): the
    in-process training of the CoWorld module tests, beside simulators in workers."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root shared by the session's runs (smoke datasets are made once; two
    workers that need the same one meet at its collection lock)."""
    return session_folder(tmp_path_factory, "data-root")


@pytest.fixture
def cli(data_root):
    """Runs ``coworld-bench`` as a user would, with the session's data root."""
    def run(*args, env_extra=None, timeout=900):
        env = {**os.environ, "COWORLD_BENCH_DATA": str(data_root), **(env_extra or {})}
        return subprocess.run([sys.executable, "-m", "coworld_bench.cli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    return run


# A folder of real smoke runs shared by the session (the report's tests and the
# end-to-end checks of the algorithms that made them): Meta-World pairs WC->DC (the
# paper's) and HP->DC with two seeds of CoWorld and Offline DV2, one multi-source run,
# one ablation and one sensitivity point. The target data is medium-replay (scripted
# behaviour, 2 episodes) so the runs land in the paper's Table 2 cells.
SMOKE_DATA = ["--set", "dataset_quality=medium-replay", "--set", "dataset_behaviour=scripted"]
SHARED_RUNS = [
    *[["--algo", "coworld", "--pair", pair, "--seed", seed]
      for seed in ("0", "1") for pair in ("WC-DC", "HP-DC")],
    # Offline DV2 also evaluates half-way, so the training curves have a band to draw,
    # and records the random-action return of its final evaluation's seeds (the tables'
    # "Random actions" row).
    *[["--algo", "offline-dv2", "--target", "DC", "--seed", seed, "--set", "eval_every=10",
       "--set", "random_baseline=true"] for seed in ("0", "1")],
    ["--algo", "coworld-multisource", "--target", "DC"],
    ["--algo", "coworld-no-state-align", "--pair", "WC-DC"],
    ["--algo", "coworld", "--pair", "WC-DC", "--set", "beta2=0.5", "--out-suffix", "beta2-0.5"],
]


@pytest.fixture(scope="session")
def shared_runs(data_root, tmp_path_factory):
    """``COWORLD_BENCH_TEST_RUNS=DIR`` keeps the runs in DIR between sessions (finished
    runs are not retrained: the runner's own rule), for quick local iterations."""
    from coworld_bench import locks

    keep = os.environ.get("COWORLD_BENCH_TEST_RUNS")
    root = Path(keep) if keep else session_folder(tmp_path_factory, "shared-runs")
    env = {**os.environ, "COWORLD_BENCH_DATA": str(data_root)}
    # One worker makes them; another that needs them waits, then finds them finished.
    with locks.hold(root.parent / f"{root.name}.lock", wait=True):
        make_shared_runs(root, env)
    return root


def make_shared_runs(root: Path, env: dict) -> None:
    for args in SHARED_RUNS:
        args = list(args)
        out = root
        if "--out-suffix" in args:
            i = args.index("--out-suffix")
            out = root / args[i + 1]
            del args[i:i + 2]
        result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "run", *args,
                                 *SMOKE_DATA, "--preset", "smoke", "--quiet", "--out", str(out)],
                                capture_output=True, text=True, env=env, timeout=900)
        assert result.returncode == 0, (args, result.stderr[-3000:])

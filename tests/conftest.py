import os
import subprocess
import sys

import pytest

# Headless rendering must be chosen before any simulator is imported.
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A private data root shared by the session's runs (smoke datasets are made once)."""
    return tmp_path_factory.mktemp("data-root")


@pytest.fixture
def cli(data_root):
    """Runs ``coworld-bench`` as a user would, with the session's data root."""
    def run(*args, env_extra=None, timeout=900):
        env = {**os.environ, "COWORLD_BENCH_DATA": str(data_root), **(env_extra or {})}
        return subprocess.run([sys.executable, "-m", "coworld_bench.cli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    return run

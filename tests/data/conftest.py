import pytest

from coworld_bench.data import CollectConfig, collect

# A tiny real dataset: two random Drawer Close episodes from the real simulator.
TINY = dict(task_id="DC", quality="random", episodes=2, seed=0, env={"fast_render": True})


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    collect(CollectConfig(**TINY), out, progress=False)
    return out

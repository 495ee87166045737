"""`coworld-bench bench`, and the rule it measures: no host synchronisation inside an
update (scalars stay tensors until the runner's logging step)."""

import json

import pytest
import torch

from coworld_bench import bench


def test_the_counter_sees_a_host_sync_and_every_operator():
    x = torch.ones(3)
    counts = bench.count_ops(lambda: (x * 2).sum().item())
    assert counts.calls == 3 and counts.syncs == 1  # mul, sum, _local_scalar_dense
    assert counts.sync_ops == {"_local_scalar_dense": 1}
    assert bench.count_ops(lambda: bool((x > 0).all())).syncs == 1
    assert bench.count_ops(lambda: (x * 2).sum()).syncs == 0
    # Backward operators are counted too.
    w = torch.ones(3, requires_grad=True)
    assert bench.count_ops(lambda: (w * x).sum().backward()).calls > 2


@pytest.mark.parametrize("algo", bench.FAMILIES)
def test_updates_never_wait_for_the_device(algo, data_root, tmp_path):
    """Every update of each family, built as `run` builds it on a real dataset, makes no
    call that would make the host wait for a GPU: under bfloat16 autocast too (the
    paper preset's path on CUDA)."""
    algorithm, _, _ = bench.build(algo, "smoke", data_root, tmp_path, "cpu")
    for name, update in algorithm.timed_steps().items():
        update()  # first calls may set things up
        counts = bench.count_ops(update)
        assert counts.syncs == 0, (name, counts.sync_ops)
        assert counts.calls > 100
        with torch.autocast("cpu", dtype=torch.bfloat16):
            counts = bench.count_ops(update)
        assert counts.syncs == 0, (name, "bf16", counts.sync_ops)


def test_bench_command(cli, tmp_path):
    out = tmp_path / "bench.json"
    result = cli("bench", "--config", "smoke", "--algos", "coworld", "drq-bc", "--updates", "1",
                 "--quiet", "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for row in ("| coworld target step |", "| coworld source step |", "| drq-bc step |"):
        assert row in table
    figures = json.loads(out.read_text())
    assert figures["matmul_gflops_per_s"] > 0 and figures["peak_rss_mib"] > 0
    for row in figures["updates"]:
        assert row["seconds"] > 0 and row["flops"] > 0 and row["aten_calls"] > 0
        # Outermost calls only (eager here): fewer than every call below autograd.
        assert 0 < row["dispatched_calls"] < row["aten_calls"]
        assert row["host_syncs"] == 0
    assert figures["sampler"]["sequences_per_s"] > 0
    assert figures["collection"]["frames_per_s_1_process"] > 0
    assert figures["collection"]["frames_per_s_n_processes"] > 0
    assert figures["evaluation"]["seconds_per_episode"] > 0
    overlap = figures["source_collection"]  # the source step's simulator, here and in a worker
    assert overlap["env_steps"] == 5
    assert overlap["seconds_in_process"] > 0 and overlap["seconds_worker"] > 0
    assert "with it in the collection worker" in table
    assert figures["machine"]["cores"] >= 1


def test_bench_names_the_families_it_measures(cli):
    result = cli("bench", "--algos", "lompo")
    assert result.returncode != 0 and "coworld, offline-dv2, drq-bc" in result.stderr
    assert "Traceback" not in result.stderr

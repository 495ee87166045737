"""`coworld_bench.host.keep_freed_memory`: what `run` applies on a CPU so that an update's
large tensors reuse the previous update's memory instead of page-faulting fresh pages in."""

import os
import subprocess
import sys

REFAULTS = """
import resource, sys, torch
from coworld_bench import host
applied = host.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(25_000_000).fill_(1.0)  # 100 MB, freed at once
before = faults()
torch.empty(25_000_000).fill_(1.0)  # the same size again
print(applied, faults() - before)
"""


def refaults(keep: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", REFAULTS], check=True, capture_output=True,
                         text=True, env=dict(os.environ, COWORLD_BENCH_KEEP_FREED_MEMORY=keep)
                         ).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_memory_is_reused_without_page_faults():
    applied, faults = refaults("1")
    assert applied and faults < 1000
    # glibc's default: the 100 MB block was unmapped on free and faults in again
    # (~24,000 pages of 4 KiB).
    applied, faults = refaults("0")
    assert not applied and faults > 20_000

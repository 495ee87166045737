"""`coworld_bench.host.keep_freed_memory`: what `run` applies on a CPU so that an update's
large tensors reuse the previous update's memory instead of page-faulting fresh pages in."""

import os
import subprocess
import sys

# Training steps of a convolution whose activations (~50 MB each) are above glibc's
# largest mmap threshold (32 MiB), as the authors'-size CoWorld encoder's are. Faults are
# counted over steps 7-11, once the heap has settled: measured with the heap kept, 0-3
# activations (12,288 pages each) still faulted in after 3 warm-up steps, 0-1 after 6.
# (A single free-then-allocate of one block is not a fair probe: torch's aligned
# allocation needs a little more than the hole a block of the same size leaves, so the
# hole is reused only once its neighbours are free too.)
REFAULTS = """
import resource, torch
from coworld_bench import host
applied = host.keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ELU(),
                          torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ELU())
x = torch.randn(48, 3, 128, 128)
def step():
    net.zero_grad(set_to_none=True)
    net(x).square().mean().backward()
for _ in range(6):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def refaults(keep: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", REFAULTS], check=True, capture_output=True,
                         text=True, env=dict(os.environ, COWORLD_BENCH_KEEP_FREED_MEMORY=keep,
                                             OMP_NUM_THREADS="1")).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_memory_is_reused_without_page_faults():
    # glibc's default: every activation is unmapped on free and faults in again
    # (~1.2 million pages of 4 KiB over the five steps, measured).
    applied, faults_default = refaults("0")
    assert not applied and faults_default > 200_000
    # Kept in the heap: 0 or 12,288 faults in 13 runs measured.
    applied, faults_kept = refaults("1")
    assert applied and faults_kept < faults_default / 20

"""A CPU training process keeps the memory it frees: re-allocating a large block costs no page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocate, touch and free 256 MiB twice; print the minor page faults of the second round.
PROBE = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from mobileclip_deploy.training.memory import keep_freed_memory
    assert keep_freed_memory()
def touch():
    t = torch.ones(64 * 2**20)  # 256 MiB, written (every page faulted in)
    del t
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_round_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    pages = 256 * 2**20 // 4096
    # Without it glibc munmaps the block on free and the kernel zeroes every page again (about `pages` faults).
    assert second_round_faults("default") > pages // 2
    assert second_round_faults("keep") < pages // 50

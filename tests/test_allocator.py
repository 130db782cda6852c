"""bench --allocator: what the C allocator does with freed memory, counted in page faults (not time)."""
import json
import platform
import subprocess
import sys

import pytest

from cifar_speed import allocator

# In a fresh process (mallopt cannot be undone): a small conv net's forward at batch 128, whose
# activations are fresh blocks of 16-32 MiB on every call; prints the configure() records and the
# page faults of 6 calls after 8 warm-up calls.
_PROBE = """
import json, resource, sys, torch
from cifar_speed import allocator
record = allocator.configure(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(64, 64, 3, padding=1),
                          torch.nn.MaxPool2d(2), torch.nn.Conv2d(64, 128, 3, padding=1)).eval()
x = torch.randn(128, 3, 32, 32)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode():
    for _ in range(8):
        net(x)
    before = faults()
    for _ in range(6):
        net(x)
print(json.dumps({"record": record, "faults": faults() - before, "again": allocator.configure("system")}))
"""
CALLS = 6
ACTIVATION_PAGES = 128 * 64 * 32 * 32 * 4 // 4096   # one 64-channel feature map at batch 128


def _probe(kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, kind], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="retain is set through glibc's mallopt")
def test_retain_reuses_freed_pages_where_system_faults_them_in_again():
    system, retain = _probe("system"), _probe("retain")
    assert system["record"] == {"allocator": "system", "requested": "system", "applied": True,
                                "how": "the C library's defaults"}
    assert system["faults"] > CALLS * ACTIVATION_PAGES  # fresh mmaps, every page faulted in, on every call
    assert retain["record"]["allocator"] == "retain" and retain["record"]["applied"]
    # The heap's pages, kept and reused. The heap may still grow late, once for each of the two
    # feature maps alive at once (glibc's aligned blocks need a little more than the block they
    # follow): clean-clone CI runs saw two maps' pages and once one page more (heap bookkeeping),
    # where system faults in every map of every call.
    assert retain["faults"] <= 2 * ACTIVATION_PAGES + 16 < system["faults"] / 3
    # Once retained, a process cannot go back, and says so rather than claiming the defaults.
    assert retain["again"]["allocator"] == "retain" and not retain["again"]["applied"]


def test_an_unknown_allocator_is_refused():
    with pytest.raises(ValueError, match="allocator must be one of"):
        allocator.configure("jemalloc")

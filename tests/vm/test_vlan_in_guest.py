"""The fabric's VLAN traffic tests, in a Debian 12 kernel under qemu (tests/vm/vmkernel.py).

This host's kernel may lack 802.1Q, where tests/netns/test_fabric.py can only check
that VLAN networks are refused. Here the same tests run in a guest that has it, on
the same code and venv (the guest's root is this host's, read only), and must pass
there, not skip. Without qemu or the guest kernel this fails, saying what is missing
(``scripts/vm-kernel install`` prepares the kernel; qemu is
``apt-get install qemu-system-x86``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.vm import vmkernel

pytestmark = pytest.mark.netns

VLAN_TESTS = [
    "tests/netns/test_fabric.py::test_vlan_networks_carry_traffic_between_hosts",
    "tests/netns/test_fabric.py::test_vlan_frames_leave_the_host_tagged_with_their_id",
]


@pytest.mark.timeout(900)
def test_vlan_networks_carry_traffic_in_a_guest_kernel_with_8021q(workdir: Path) -> None:
    try:
        outcome = vmkernel.run([*VLAN_TESTS, "-rA"], workdir, timeout=600)
    except vmkernel.VmError as exc:
        pytest.fail(f"the guest cannot run: {exc}")
    report = f"guest pytest exit {outcome.code}:\n{outcome.output}\n--- console:\n{outcome.console}"
    assert outcome.code == 0, report
    for test in VLAN_TESTS:
        assert f"PASSED {test}" in outcome.output, report
    summary = outcome.output.strip().splitlines()[-1]
    assert re.search(rf"\b{len(VLAN_TESTS)} passed\b", summary), report
    assert not re.search(r"skipped|failed|error", summary), report
    assert f"astara-vm: kernel {vmkernel.prepare().release}" in outcome.console

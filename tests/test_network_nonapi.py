"""The nonapi kernel variant (Fig 7), checked on the BUILT kernel, not on the patch text.

Both kernels are built by the pipeline (variants net and nonapi of config/config.yaml, into
build/test-results).  In each vmlinux every function of the e1000 driver (e1000_*) and of
8139too (rtl8139_*) is disassembled: the net kernel's drivers call the NAPI entry points
(the control), the nonapi kernel's call none of them and hand packets to netif_rx instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TEST_RESULTS, TEST_RESULTS_REL, build_or_fail

pytestmark = [pytest.mark.boot, pytest.mark.build]

# What scheduling NAPI takes: the inline napi_schedule() is napi_schedule_prep + __napi_schedule;
# netif_napi_add() is an inline wrapper of netif_napi_add_weight().
NAPI_SCHEDULING = ("__napi_schedule", "napi_schedule_prep", "__napi_schedule_irqoff", "netif_napi_add_weight",
                   "napi_complete_done", "napi_enable", "napi_disable")
NAPI_RECEIVE = ("napi_gro_receive", "napi_gro_frags", "napi_get_frags", "__napi_alloc_skb", "napi_build_skb",
                "napi_consume_skb")
DRIVERS = {"e1000": "e1000_", "8139too": "rtl8139_"}


@pytest.fixture(scope="module")
def kernels() -> dict[str, Path]:
    targets = [f"{TEST_RESULTS_REL}/kernels/{v}/build.json" for v in ("baseline", "nonapi")]
    build_or_fail("the baseline and nonapi kernels", *targets)
    return {v: TEST_RESULTS / "kernels" / v / "vmlinux" for v in ("baseline", "nonapi")}


def driver_calls(vmlinux: Path, prefix: str) -> dict[str, set[str]]:
    """{function: the functions it calls} for every text symbol of vmlinux starting with *prefix*."""
    syms = subprocess.run(["nm", "-S", "--defined-only", str(vmlinux)], capture_output=True, text=True,
                          check=True).stdout
    funcs = []
    for line in syms.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT" and parts[3].startswith(prefix):
            funcs.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    assert funcs, f"no {prefix}* functions in {vmlinux}: is the driver built in?"
    start, stop = min(a for a, _, _ in funcs), max(a + s for a, s, _ in funcs)
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                          f"--stop-address={stop:#x}", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    names = {name for _, _, name in funcs}
    calls: dict[str, set[str]] = {}
    current = None
    for line in asm.splitlines():
        if m := re.match(r"^[0-9a-f]+ <([^>+]+)>:$", line):
            current = m.group(1) if m.group(1) in names else None
            if current:
                calls.setdefault(current, set())
        elif current and (m := re.search(r"\s(?:call|jmp)\s+[0-9a-f]+ <([^>+]+)(?:\+0x[0-9a-f]+)?>", line)):
            calls[current].add(m.group(1))
    return calls


def _callers(calls: dict[str, set[str]], targets) -> dict[str, list[str]]:
    return {t: sorted(f for f, c in calls.items() if t in c) for t in targets if any(t in c for c in calls.values())}


def test_baseline_kernel_drivers_schedule_napi(kernels):
    e1000 = driver_calls(kernels["baseline"], DRIVERS["e1000"])
    assert "__napi_schedule" in e1000["e1000_intr"] and "napi_schedule_prep" in e1000["e1000_intr"]
    assert "e1000_clean" in e1000  # the NAPI poll callback
    assert _callers(e1000, ["netif_napi_add_weight"])
    # The NAPI driver hands packets to GRO, which 2.6.27 did not have: the runs turn the NIC's GRO
    # off (guestio.workloads.netbench.GUEST_GRO), so that Fig 7's kernels differ only in NAPI.
    assert _callers(e1000, ["napi_gro_receive"])
    rtl = driver_calls(kernels["baseline"], DRIVERS["8139too"])
    assert "__napi_schedule" in rtl["rtl8139_interrupt"]


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_nonapi_kernel_drivers_never_schedule_napi(kernels, driver):
    calls = driver_calls(kernels["nonapi"], DRIVERS[driver])
    assert _callers(calls, NAPI_SCHEDULING + NAPI_RECEIVE) == {}
    assert "e1000_clean" not in calls and "rtl8139_poll" not in calls
    # The work is in the interrupt handler, and packets reach the stack through netif_rx.
    assert _callers(calls, ["netif_rx"]), f"no {driver} function calls netif_rx"
    if driver == "e1000":
        intr = calls["e1000_intr"]
        # Transmit completion in the handler: e1000_clean_tx_irq, or its body inlined (it frees the
        # sent buffers and completes BQL); receive goes through adapter->clean_rx (an indirect call).
        assert any(c.startswith(("e1000_clean_tx_irq", "e1000_unmap_and_free_tx_resource")) for c in intr) \
            and "dql_completed" in intr | calls.get("e1000_clean_tx_irq", set()), sorted(intr)
        assert "netif_rx" in calls["e1000_clean_rx_irq"]
    else:
        assert "rtl8139_rx" in calls["rtl8139_interrupt"] or "netif_rx" in calls["rtl8139_interrupt"]


def test_nonapi_object_file_has_no_napi_symbol(kernels):
    """The same from the object the build linked (the variant's out-of-tree build tree)."""
    build = TEST_RESULTS / "kernels" / "nonapi" / "build.json"
    import json
    record = json.loads(build.read_text())
    tree = next((Path(v) for k, v in record.items() if k in ("build_dir", "objtree", "tree") and v), None)
    obj = (tree / "drivers/net/ethernet/intel/e1000/e1000_main.o") if tree else None
    if obj is None or not obj.is_file():
        obj = REPO / "build/kernel/nonapi/src/.build/drivers/net/ethernet/intel/e1000/e1000_main.o"
    if not obj.is_file():
        pytest.skip("the variant's build tree is gone (only vmlinux is kept): the vmlinux tests cover it")
    undefined = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
    assert not set(undefined) & set(NAPI_SCHEDULING + NAPI_RECEIVE), sorted(set(undefined) & set(NAPI_SCHEDULING))
    assert "netif_rx" in undefined

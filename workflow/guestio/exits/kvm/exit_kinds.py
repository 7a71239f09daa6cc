"""What kind of exit one ``kvm_exit`` was, and at which port or address.

The first ``kvm_pio`` / ``kvm_mmio`` / ``kvm_fast_mmio`` / ``kvm_msr`` /
``kvm_hypercall`` event between an exit and its entry gives the port,
guest-physical address, MSR index or hypercall number and the direction.
Where no such event was recorded the VMX exit qualification (``info1``) or SVM
EXITINFO is decoded instead (port and direction of I/O, direction of APIC
accesses, direction of SVM MSR accesses, the vector of an external interrupt).
"""

from __future__ import annotations

# Exit reasons -> schema kinds.  'pio'/'mmio'/'msr' are refined by the I/O event or exit info;
# 'mmio?' is MMIO only when an MMIO event was recorded (otherwise an ordinary EPT/NPT fault).
VMX_REASONS: dict[str, str] = {
    "IO_INSTRUCTION": "pio", "EPT_MISCONFIG": "mmio", "EPT_VIOLATION": "mmio?",
    "APIC_ACCESS": "mmio", "HLT": "hlt", "CPUID": "cpuid", "MSR_READ": "msr_read",
    "MSR_WRITE": "msr_write", "VMCALL": "hypercall", "EXTERNAL_INTERRUPT": "interrupt",
}
SVM_REASONS: dict[str, str] = {
    "io": "pio", "npf": "mmio?", "hlt": "hlt", "cpuid": "cpuid", "msr": "msr",
    "hypercall": "hypercall", "vmmcall": "hypercall", "interrupt": "interrupt", "intr": "interrupt",
    "avic_unaccelerated_access": "mmio",
}
IO_EVENTS = ("kvm_pio", "kvm_mmio", "kvm_fast_mmio", "kvm_msr", "kvm_hypercall")


def classify_exit(reason: str, info1: int | None = None, info2: int | None = None,
                  intr_info: int | None = None, io: tuple[str, dict] | None = None,
                  isa: int | None = None) -> tuple[str, int | None, str]:
    """(exit_kind, port_or_address, source) for one exit.

    ``io`` is the first I/O event recorded between the exit and the next entry:
    (event name, decoded fields).  ``source`` says where kind and address came
    from: 'event', 'exit-info' or 'reason'.
    """
    svm = reason in SVM_REASONS or isa == 2 or (reason[:1].islower() and reason not in VMX_REASONS)
    coarse = (SVM_REASONS if svm else VMX_REASONS).get(reason, "other")
    ev, f = io if io else (None, {})
    if coarse == "pio":
        if ev == "kvm_pio":
            return ("pio_out" if f.get("rw") else "pio_in"), f.get("port"), "event"
        if info1 is not None:
            port = (info1 >> 16) & 0xFFFF
            is_in = bool(info1 & 0x1) if svm else bool(info1 & 0x8)
            return ("pio_in" if is_in else "pio_out"), port, "exit-info"
        return "other", None, "reason"
    if coarse in ("mmio", "mmio?"):
        if ev == "kvm_mmio":
            t = f.get("type:sym") or ""
            kind = "mmio_write" if (t == "write" or f.get("type") == 2) else "mmio_read"
            return kind, f.get("gpa"), "event"
        if ev == "kvm_fast_mmio":
            return "mmio_write", f.get("gpa"), "event"
        if reason == "APIC_ACCESS" and info1 is not None:
            access = (info1 >> 12) & 0xF  # 0: linear read, 1: linear write (SDM 28-6)
            if access in (0, 1):
                return ("mmio_write" if access == 1 else "mmio_read"), None, "exit-info"
        return "other", None, "reason"
    if coarse == "msr":  # SVM: EXITINFO1 0 = RDMSR, 1 = WRMSR
        if ev == "kvm_msr":
            return ("msr_write" if f.get("write") else "msr_read"), f.get("ecx"), "event"
        if info1 is not None:
            return ("msr_write" if info1 & 1 else "msr_read"), None, "exit-info"
        return "other", None, "reason"
    if coarse in ("msr_read", "msr_write"):
        return coarse, (f.get("ecx") if ev == "kvm_msr" else None), ("event" if ev == "kvm_msr" else "reason")
    if coarse == "hypercall":
        if ev == "kvm_hypercall":
            return "hypercall", f.get("nr"), "event"
        return "hypercall", None, "reason"
    if coarse == "interrupt":
        vec = intr_info & 0xFF if (not svm and intr_info is not None and intr_info & 0x80000000) else None
        return "interrupt", vec, "exit-info" if vec is not None else "reason"
    return coarse, None, "reason"

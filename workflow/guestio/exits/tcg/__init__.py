"""TCG backend: modelled VM exits of a guest job run with the exitcount plugin.

Under TCG there are no VM exits.  ``workflow/plugin/exitcount.c`` (a QEMU 7.2 TCG plugin,
API version 1) counts, per guest pc, the instructions that would exit under Intel VMX with
KVM's defaults -- port I/O, MMIO, HLT, CPUID, RDMSR/WRMSR, VMCALL/VMMCALL and a few others --
with the call site that entered the function (shadow call stack), separately per phase
(``boot``, ``init``, ``benchmark``, ``shutdown`` and named windows: the plugin follows the
serial console log, see the plugin's header comment).  One step per module:

* :mod:`.plugin`: the plugin on a run: its build, its QEMU arguments, the lifecycle hook
  :class:`~.plugin.ExitCounter`, and :func:`~.plugin.run_with_plugin`
  (:func:`guestio.vm.machine.run_vm` does the run, the plugin is only extra QEMU arguments);
* :mod:`.plugin_csv`: the plugin's CSV (:func:`~.plugin_csv.read_plugin_csv`);
* :mod:`.exit_rows`: its rows -> rows of the exits schema (:func:`~.exit_rows.to_exits`):
  accelerator ``tcg-modelled``, pc -> function+offset and call site -> calling function
  through the guest kernel's System.map;
* :mod:`.sequence` and :mod:`.cross_check`: with ``trace=True`` a run also runs QEMU with ``-d plugin -D qemu.log -trace
  memory_region_ops_read -trace memory_region_ops_write`` and the plugin's ``seq=on``: the
  plugin then writes every port-I/O execution (before it executes) and MMIO access (after
  it) into QEMU's own log, interleaved in execution order with QEMU's trace events for the
  same accesses (one vCPU thread, one log stream).  :func:`~.sequence.parse_sequence` attributes every
  trace event to the plugin record it belongs to, which (a) gives the port of the DX-form
  IN/OUT/INS/OUTS executions (API v1 cannot read DX), and (b) is the cross-check of
  :func:`~.cross_check.cross_check`: the plugin's accesses per I/O port and per MMIO address
  equal QEMU's own count of the same run;
* :mod:`.overhead`: what the plugin and the trace cost a run;
* ``python -m guestio.exits.tcg`` (:mod:`.__main__`): one plugin run's CSV -> exits CSV.

The trace log is large (about 150 bytes per port/MMIO access) and tracing slows QEMU
down: use it for short jobs, or to learn which port(s) each DX-form pc uses
(:func:`~.sequence.learn_pio_ports`) and pass that map to :func:`~.exit_rows.to_exits` for untraced runs (only
single-port pcs are filled in; a pc such as ``ioread8`` that serves several ports keeps an
empty port unless the run itself was traced).

Counting conventions (the plugin's): ``count`` is executions; a REP INS/OUTS counts every
iteration (as QEMU's trace does); KVM's string-PIO emulation exits about once per page of
data, which the plugin's ``starts`` column (first iterations) approximates.  All RDMSR/WRMSR
are counted (ECX is unreadable, so KVM's MSR pass-through cannot be modelled).
"""



class TcgExitError(RuntimeError):
    pass

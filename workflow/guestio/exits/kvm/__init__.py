"""KVM backend: VM-exit sites and handling times from the host's tracefs text output.

One module per step, in the order a trace goes through them:

- :mod:`.c_expr`: the small part of C that ``print fmt`` arguments are written in;
- :mod:`.printfmt`: a ``print fmt`` compiled into a regex that decodes an event's fields
  (printf conversions, ``__print_symbolic``, ``__print_flags``, ``cond ? "a" : "b"``,
  ``__get_str``);
- :mod:`.formats`: tracefs ``format`` files (fields, print fmt) of each event.  The events
  gained fields between kernel versions (kvm_exit: ``requests`` in 6.13-6.15-era kernels;
  kvm_entry: ``immediate_exit``, then ``intr_info``/``error_code``); the same code reads all
  of them because it looks fields up by name;
- :mod:`.trace_lines`: one line of the text output (event, lost-events marker, header);
- :mod:`.exit_kinds`: an exit's kind and port or address, from its I/O event or exit info;
- :mod:`.parser`: each ``kvm_exit`` paired with its vCPU thread's next ``kvm_entry``
  (handling time), lost events, phases, the summary;
- :mod:`.sites`: exit records -> the exits schema, symbolised against System.map;
- :mod:`.trace_reader`: a trace's text or a saved trace directory -> table and summary;
- :mod:`.recorder`: :class:`~.recorder.KvmTracer`, which records a window through tracefs
  (root, a KVM host);
- :mod:`.hook`: :class:`~.hook.KvmExitTracer`, the VM lifecycle hook that records a run's
  measured window.
"""


class FormatError(ValueError):
    """A format file or print fmt that this parser does not understand."""

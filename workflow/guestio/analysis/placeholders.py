"""Placeholders in the claims and the figures they draw, resolved to this run's values."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

__all__ = ["PLACEHOLDER_DEFAULTS", "resolve_placeholders"]

#: "{name}" in a selector value, a label or a title stands for a value of this run's, given by the
#: caller (the figures' and the claims table's ``defaults``); these where the caller gives none.
#: sched_host: the host I/O scheduler in the place of the paper's CFQ -- bfq, its successor, or what
#: stood in for bfq on a host without it (diskmods.sched.host_fallback, guestio.hostprobe).
PLACEHOLDER_DEFAULTS = {"sched_host": "bfq"}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _placeholder_value(value: Any) -> str:
    """A defaults entry as one value: a string, or the last of a list that also allows "-"."""
    if isinstance(value, str):
        return value
    values = [str(v) for v in value if str(v) != "-"]
    return values[-1] if values else "-"


def resolve_placeholders(obj: Any, values: Mapping[str, Any] | None = None) -> Any:
    """*obj* (a claim, quantity, figure claim, a mapping of them, a string ...) with every "{name}"
    of :data:`PLACEHOLDER_DEFAULTS` replaced by ``values[name]`` (or that default)."""
    subs = dict(PLACEHOLDER_DEFAULTS)
    subs.update({k: _placeholder_value(v) for k, v in (values or {}).items() if k in PLACEHOLDER_DEFAULTS})

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return _PLACEHOLDER.sub(lambda m: subs.get(m.group(1), m.group(0)), x)
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return dataclasses.replace(x, **{f.name: walk(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init})
        if isinstance(x, Mapping):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(walk(i) for i in x))
        if isinstance(x, (tuple, list)):
            return type(x)(walk(i) for i in x)
        return x

    return walk(obj)

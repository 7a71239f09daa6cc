"""The paper's claims, loaded from ``claims.yaml`` beside this module and checked.

``load_claims()`` returns ``{claim id: Claim}`` in the paper's order (PAPER.md's
table); ``load_artifacts()`` the artifacts they are tested by; ``figure_claims()``
what each figure draws, as the ``FigureClaim``/``Panel`` objects
``guestio.analysis.figures`` uses (the objects: ``guestio.analysis.claim_model``).
The file's header documents its fields and the verdict-rule vocabulary
(``VERDICT_RULES``).

Every problem in the file is reported at once (``guestio.analysis.claims_check``),
each naming the claim (or artifact) and the field, e.g.::

    invalid claims file .../claims.yaml (2 problems):
      - claim fig1, quantities[0].verdict_rule: unknown key 'tolerence'; allowed keys: kind, tolerance, value
      - claim fig6.artifacts[1]: 'fig9' is not an artifact; artifacts: fig1, fig2, ...
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

from guestio.analysis.claim_model import Artifact, Claim, FigureClaim, Paper
from guestio.analysis.claims_check import YAML_LOADER, check

__all__ = ["CLAIMS_FILE", "ClaimsError", "load_claims", "load_artifacts", "load_paper", "figure_claims"]

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


class ClaimsError(ValueError):
    """The claims file is malformed; the message lists every problem with its claim id and field."""


@functools.lru_cache(maxsize=8)


def _load(path: str, mtime_ns: int, size: int) -> tuple[Paper, dict[str, Artifact], dict[str, Claim],
                                                        dict[str, FigureClaim]]:
    """The parsed file; the cache key has the file's mtime and size, so an edited file is read again."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except (OSError, yaml.YAMLError) as e:
        raise ClaimsError(f"cannot read the claims file {path}: {e}") from None
    parsed, problems = check(data)
    if parsed is None:
        raise ClaimsError(f"invalid claims file {path}: " + problems[0])
    if problems:
        n = len(problems)
        raise ClaimsError(f"invalid claims file {path} ({n} problem{'s' if n > 1 else ''}):\n"
                          + "\n".join(f"  - {line}" for line in problems))
    return parsed


def _cached(path: str | os.PathLike | None):
    resolved = Path(path if path is not None else CLAIMS_FILE).resolve()
    try:
        st = resolved.stat()
    except OSError as e:
        raise ClaimsError(f"cannot read the claims file {resolved}: {e}") from None
    return _load(str(resolved), st.st_mtime_ns, st.st_size)


def load_claims(path: str | os.PathLike | None = None) -> dict[str, Claim]:
    """{claim id: Claim} of the claims file (default: ``claims.yaml`` beside this module), in its order.

    Raises ClaimsError listing every problem of the file.
    """
    return dict(_cached(path)[2])


def load_paper(path: str | os.PathLike | None = None) -> Paper:
    """The paper's citation and testbed, from the claims file."""
    return _cached(path)[0]


def load_artifacts(path: str | os.PathLike | None = None) -> dict[str, Artifact]:
    """{artifact id: Artifact} of the claims file."""
    return dict(_cached(path)[1])


def figure_claims(path: str | os.PathLike | None = None) -> dict[str, FigureClaim]:
    """{figure id: FigureClaim} for every figure that draws panels, in the order of the claims."""
    return dict(_cached(path)[3])

"""Patches and patch layers, shared by the kernel and QEMU builds.

A layer is a directory ``<layers_root>/<name>/`` whose ``*.patch`` files are
applied in name order; a variant is an ordered list of layers.  A variant's
tree is a hard-linked copy of a pristine source (a file a patch touches is
copied first, so the pristine tree never changes).  Every patch is dry-run
before it is applied, so one that does not apply stops the build naming the
patch file and the failing hunk, with nothing of it half-applied.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from guestio.util import exclusive, sha256_file


class PatchError(Exception):
    """A patch does not apply, or a layer does not exist."""


def known_layers(layers_root: Path) -> list[str]:
    root = Path(layers_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def layer_dir(layers_root: Path, name: str, *, what: str = "layer", error: type[Exception] = PatchError) -> Path:
    path = Path(layers_root) / name
    if not path.is_dir():
        known = known_layers(layers_root)
        raise error(f"{what} {name!r} does not exist under {layers_root} (known layers: {', '.join(known) or 'none'})")
    return path


def layer_patches(layers_root: Path, name: str, *, what: str = "layer", error: type[Exception] = PatchError) -> list[Path]:
    """A layer's patches, in name order."""
    return sorted(layer_dir(layers_root, name, what=what, error=error).glob("*.patch"))


def variant_patches(layers_root: Path, layers: list[str], *, what: str = "layer",
                    error: type[Exception] = PatchError) -> list[Path]:
    """The patches of an ordered list of layers, in the order they are applied."""
    return [p for layer in layers for p in layer_patches(layers_root, layer, what=what, error=error)]


def describe(patches: list[Path]) -> list[dict]:
    """Each patch's path and sha256, for build records."""
    return [{"file": str(p), "sha256": sha256_file(p)} for p in patches]


def patched_files(patch: Path, strip: int = 1) -> list[str]:
    """The files a patch writes (its ``+++`` names, with *strip* leading components removed)."""
    files = []
    for line in Path(patch).read_text(errors="replace").splitlines():
        if line.startswith("+++ "):
            name = line[4:].split("\t")[0].strip()
            if name != "/dev/null":
                parts = name.split("/")
                files.append("/".join(parts[strip:]) if len(parts) > strip else parts[-1])
    return files


_HUNK_HEADER = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def unified_diff_problem(patch: Path) -> str | None:
    """Why *patch* is not a well-formed unified diff, or None if it is.

    Read without a source tree (so it can run before any job): every file needs a
    ``--- ``/``+++ `` header followed by ``@@`` hunks whose line counts match their
    bodies.  Free text outside a file's hunks (a commit message, ``diff --git`` and
    ``index`` lines, a signature) is allowed, as patch(1) allows it.
    """
    lines = Path(patch).read_text(errors="replace").splitlines()
    files, i = 0, 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        header_line, i, hunks = i + 1, i + 2, 0
        while i < len(lines) and (m := _HUNK_HEADER.match(lines[i])):
            hunk_line = i + 1
            old, new = int(m.group(1) or 1), int(m.group(2) or 1)
            i += 1
            while old > 0 or new > 0:
                if i >= len(lines):
                    return (f"the hunk at line {hunk_line} is cut short: the file ends before its last lines "
                            f"({old} old and {new} new still missing)")
                body = lines[i]
                if body.startswith("\\"):  # "\ No newline at end of file"
                    pass
                elif body == "" or body.startswith(" "):  # context (an empty line: its space was stripped)
                    old, new = old - 1, new - 1
                elif body.startswith("-"):
                    old -= 1
                elif body.startswith("+"):
                    new -= 1
                else:
                    return (f"the hunk at line {hunk_line} ends early at line {i + 1} ({body[:40]!r}): "
                            "its @@ line counts more lines than it has")
                if old < 0 or new < 0:
                    return f"the hunk at line {hunk_line} has more lines than its @@ line counts"
                i += 1
            while i < len(lines) and lines[i].startswith("\\"):
                i += 1
            hunks += 1
        if hunks == 0:
            return f"the file header at line {header_line} has no @@ hunk after it"
        files += 1
    if files == 0:
        return "not a unified diff: no '--- '/'+++ ' file header followed by an '@@' hunk"
    return None


def _break_hardlink(path: Path) -> None:
    if path.is_file() and path.stat().st_nlink > 1:
        tmp = path.with_name(path.name + ".guestio-copy")
        shutil.copy2(path, tmp)
        tmp.replace(path)


def check_patch(tree: Path, patch: Path, error: type[Exception] = PatchError) -> None:
    """Dry-run a patch; raise *error* naming the patch and the failing hunks."""
    result = subprocess.run(
        ["patch", "-p1", "--dry-run", "--batch", "--forward", "-i", str(Path(patch).resolve())],
        cwd=tree, capture_output=True, text=True,
    )
    if result.returncode != 0:
        failures = []
        current = "?"
        for line in (result.stdout + result.stderr).splitlines():
            if m := re.match(r"^checking file (.*)$", line):
                current = m.group(1)
            elif "FAILED" in line or "Reversed" in line or "can't find file" in line or "malformed" in line:
                failures.append(f"{current}: {line.strip()}")
        detail = "; ".join(failures) or (result.stdout + result.stderr).strip()
        raise error(f"patch {patch} does not apply: {detail}")


def apply_patches(tree: Path, patches: list[Path], error: type[Exception] = PatchError) -> None:
    """Apply patches in order.  Each is dry-run first, so a bad one leaves nothing half-applied."""
    for patch in patches:
        check_patch(tree, patch, error)
        for name in patched_files(patch):
            _break_hardlink(Path(tree) / name)
        subprocess.run(
            ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-s", "-i", str(Path(patch).resolve())],
            cwd=tree, check=True,
        )


def prepare_tree(pristine: Path, tree: Path, patches: list[Path], error: type[Exception] = PatchError) -> None:
    """A hard-linked copy of the pristine source with the variant's patches applied."""
    tree = Path(tree)
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(pristine, shared=True):  # not while another invocation re-extracts it
        subprocess.run(["cp", "-al", str(pristine), str(tree)], check=True)
    apply_patches(tree, patches, error)

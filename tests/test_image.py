"""Tests for the guest image: cpio writer, ELF closure, initramfs build, data disks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from guestio.util import sha256_file

from guestio.build import cpio
from guestio.build import disk
from guestio.build import image
from guestio.build.image import debs, elf, initramfs

REPO = Path(__file__).resolve().parents[1]



# --------------------------------------------------------------------------- cpio

def sample_entries() -> list[cpio.Entry]:
    return [
        cpio.file_entry("bin/tool", b"#!/bin/sh\necho hi\n", executable=True),
        cpio.dir_entry("bin"),
        cpio.file_entry("etc/motd", b"hello\n"),
        cpio.dir_entry("etc"),
        cpio.file_entry("etc/empty", b""),
        cpio.file_entry("etc/odd", b"12345"),  # length not a multiple of 4
        cpio.symlink_entry("bin/sh", "/bin/tool"),
        cpio.dir_entry("dev"),
        cpio.chardev_entry("dev/console", 5, 1),
    ]


def test_cpio_round_trip_headers_and_padding():
    data = cpio.archive_bytes(sample_entries(), mtime=1234)
    assert len(data) % 4 == 0
    members = cpio.read_cpio(data)
    names = [m.name for m in members]
    assert names == ["bin", "bin/sh", "bin/tool", "dev", "dev/console", "etc",
                     "etc/empty", "etc/motd", "etc/odd"]
    assert [m.ino for m in members] == list(range(1, len(members) + 1))
    by = {m.name: m for m in members}
    for m in members:
        assert (m.uid, m.gid, m.mtime) == (0, 0, 1234)
        assert m.nlink == (2 if m.kind == cpio.DIR else 1)
    assert by["bin"].mode == 0o040755
    assert by["bin/tool"].mode == 0o100755 and by["bin/tool"].data == b"#!/bin/sh\necho hi\n"
    assert by["etc/motd"].mode == 0o100644 and by["etc/motd"].data == b"hello\n"
    assert by["etc/odd"].data == b"12345" and by["etc/empty"].data == b""
    assert by["bin/sh"].mode == 0o120777 and by["bin/sh"].data == b"/bin/tool"
    con = by["dev/console"]
    assert con.mode == 0o020600 and (con.rdevmajor, con.rdevminor) == (5, 1)
    # every member starts 4-byte aligned with the newc magic, and the trailer ends it
    pos = 0
    for m in members:
        assert data[pos:pos + 6] == b"070701"
        name_end = pos + cpio.HEADER_LEN + len(m.name) + 1
        pos = name_end + (-name_end % 4)
        pos += len(m.data) + (-len(m.data) % 4)
    assert data[pos:pos + 6] == b"070701"
    assert data[pos + cpio.HEADER_LEN:].rstrip(b"\0") == b"TRAILER!!!"
    # entries survive the round trip
    assert [m.to_entry() for m in members] == cpio.sorted_entries(sample_entries())


def test_cpio_deterministic_regardless_of_input_order(tmp_path):
    a = cpio.archive_bytes(sample_entries())
    b = cpio.archive_bytes(list(reversed(sample_entries())))
    assert a == b
    cpio.write_cpio(sample_entries(), tmp_path / "x.cpio")
    assert (tmp_path / "x.cpio").read_bytes() == a
    assert cpio.archive_bytes(sample_entries(), mtime=5) != a
    buf = io.BytesIO()
    cpio.write_cpio(sample_entries(), buf)
    assert buf.getvalue() == a


def test_cpio_rejects_conflicting_duplicates_and_bad_paths():
    with pytest.raises(cpio.CpioError, match="duplicate"):
        cpio.archive_bytes([cpio.file_entry("a", b"1"), cpio.file_entry("a", b"2")])
    # an identical duplicate is harmless
    assert cpio.archive_bytes([cpio.dir_entry("a"), cpio.dir_entry("/a/")]) == \
        cpio.archive_bytes([cpio.dir_entry("a")])
    with pytest.raises(cpio.CpioError):
        cpio.file_entry("../etc/passwd", b"")
    assert cpio.file_entry("/./usr//bin/x", b"").path == "usr/bin/x"


def test_entry_from_fs_normalises_modes(tmp_path):
    (tmp_path / "exe").write_bytes(b"x")
    (tmp_path / "exe").chmod(0o700)
    (tmp_path / "data").write_bytes(b"y")
    (tmp_path / "data").chmod(0o600)
    (tmp_path / "link").symlink_to("exe")
    (tmp_path / "d").mkdir(mode=0o700)
    assert cpio.entry_from_fs(tmp_path / "exe", "bin/exe").mode == 0o755
    assert cpio.entry_from_fs(tmp_path / "data", "etc/data").mode == 0o644
    link = cpio.entry_from_fs(tmp_path / "link", "bin/link")
    assert (link.kind, link.target) == (cpio.SYMLINK, "exe")
    assert cpio.entry_from_fs(tmp_path / "d", "d") == cpio.dir_entry("d")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_cpio_readable_by_gnu_cpio(tmp_path):
    arc = tmp_path / "a.cpio"
    cpio.write_cpio(sample_entries(), arc)
    listing = subprocess.run(["cpio", "-itv", "--quiet"], stdin=arc.open("rb"),
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(listing) == 9
    line = {ln.split()[-1] if "->" not in ln else ln.split()[-3]: ln for ln in listing}
    assert line["bin/sh"].startswith("lrwxrwxrwx") and line["bin/sh"].endswith("-> /bin/tool")
    assert line["dev/console"].startswith("crw-------") and "5,   1" in line["dev/console"]
    assert line["bin/tool"].startswith("-rwxr-xr-x")
    assert line["etc"].startswith("drwxr-xr-x")
    # extract the regular files and compare contents
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "etc/*", "bin/tool"], cwd=out,
                   stdin=arc.open("rb"), check=True)
    assert (out / "etc/motd").read_bytes() == b"hello\n"
    assert (out / "etc/odd").read_bytes() == b"12345"
    assert (out / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"


# --------------------------------------------------------------------------- ELF closure

def make_elf(needed=(), interp=None, runpath=None, machine=62) -> bytes:
    """A minimal ELF64 x86-64 file with PT_INTERP / PT_DYNAMIC (DT_NEEDED, DT_RUNPATH)."""
    base = 0x400000
    nph = 2 + (interp is not None)
    ph_off, ph_size = 64, 56
    cur = ph_off + nph * ph_size
    interp_b = (interp.encode() + b"\0") if interp is not None else b""
    interp_off = cur
    cur += len(interp_b)
    strtab = b"\0"
    offs = []
    for s in list(needed) + ([runpath] if runpath else []):
        offs.append(len(strtab))
        strtab += s.encode() + b"\0"
    str_off = cur
    cur += len(strtab)
    cur += -cur % 8
    dyn_off = cur
    dyn = [(1, o) for o in offs[:len(needed)]]
    if runpath:
        dyn.append((29, offs[-1]))
    dyn += [(5, base + str_off), (10, len(strtab)), (0, 0)]
    dyn_b = b"".join(struct.pack("<qQ", t, v) for t, v in dyn)
    total = dyn_off + len(dyn_b)
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
            + struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, base, ph_off, 0, 0, 64, ph_size, nph, 64, 0, 0))
    phs = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
    if interp is not None:
        phs += struct.pack("<IIQQQQQQ", 3, 4, interp_off, base + interp_off, base + interp_off,
                           len(interp_b), len(interp_b), 1)
    phs += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, base + dyn_off, base + dyn_off,
                       len(dyn_b), len(dyn_b), 8)
    body = ehdr + phs + interp_b + strtab
    body += bytes(dyn_off - len(body))
    return body + dyn_b


def put(root: Path, rel: str, data: bytes, mode: int = 0o755) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    p.chmod(mode)


LD = "/lib64/ld-linux-x86-64.so.2"


def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    put(root, "usr/bin/prog", make_elf(["libfoo.so.1", "libc.so.6"], interp=LD))
    put(root, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", make_elf([]))
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    put(root, "lib/x86_64-linux-gnu/libc.so.6", make_elf(["ld-linux-x86-64.so.2"]))
    put(root, "usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3", make_elf(["libbar.so.2", "libc.so.6"]), 0o644)
    (root / "usr/lib/x86_64-linux-gnu/libfoo.so.1").symlink_to("libfoo.so.1.2.3")
    put(root, "usr/lib/x86_64-linux-gnu/private/libbar.so.2", make_elf(["libc.so.6"]), 0o644)
    return root


def test_read_elf_parses_interp_needed_runpath(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(make_elf(["liba.so.1", "libb.so.2"], interp=LD, runpath="$ORIGIN/../lib:/opt/x"))
    info = elf.read_elf(p)
    assert info.interp == LD
    assert info.needed == ("liba.so.1", "libb.so.2")
    assert info.runpath == ("$ORIGIN/../lib", "/opt/x")
    assert info.machine == 62


def test_library_closure_follows_symlinks_runpath_and_transitive_deps(tmp_path):
    root = fake_root(tmp_path)
    # libbar lives in a private directory reached through libfoo's RUNPATH
    put(root, "usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3",
        make_elf(["libbar.so.2", "libc.so.6"], runpath="$ORIGIN/private"), 0o644)
    cl = elf.library_closure(root, ["prog"])
    assert cl.programs == {"prog": "usr/bin/prog"}
    assert cl.files == {
        "usr/bin/prog",
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3",
        "usr/lib/x86_64-linux-gnu/private/libbar.so.2",
    }
    assert cl.symlinks == {
        "lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "usr/lib/x86_64-linux-gnu/libfoo.so.1": "libfoo.so.1.2.3",
    }


def test_missing_library_names_program_and_library(tmp_path):
    root = fake_root(tmp_path)  # libbar.so.2 is not on any search path
    with pytest.raises(image.MissingLibraryError) as err:
        elf.library_closure(root, ["prog"])
    assert err.value.program == "prog"
    assert err.value.library == "libbar.so.2"
    assert err.value.needed_by == "usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3"
    assert "prog" in str(err.value) and "libbar.so.2" in str(err.value)


def test_missing_interpreter_and_wrong_machine_are_errors(tmp_path):
    root = fake_root(tmp_path)
    shutil.move(root / "usr/lib/x86_64-linux-gnu/private/libbar.so.2",
                root / "usr/lib/x86_64-linux-gnu/libbar.so.2")
    (root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unlink()
    with pytest.raises(image.MissingLibraryError, match="ld-linux-x86-64.so.2") as err:
        elf.library_closure(root, ["prog"])
    assert err.value.program == "prog"
    put(root, "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", make_elf([]))
    # a libbar for another machine (aarch64) is skipped like ld.so does: still missing
    put(root, "usr/lib/x86_64-linux-gnu/libbar.so.2", make_elf([], machine=183), 0o644)
    with pytest.raises(image.MissingLibraryError, match="libbar.so.2"):
        elf.library_closure(root, ["prog"])
    with pytest.raises(image.ImageError, match="nosuchprog"):
        elf.library_closure(root, ["nosuchprog"])


def test_apt_depends_parsing_picks_real_packages():
    text = (
        "libpam-modules\n"
        "  PreDepends: libc6\n"
        " |PreDepends: debconf\n"
        "  PreDepends: <debconf-2.0>\n"
        "    cdebconf\n"
        "    debconf\n"
        "  Depends: libpam-modules-bin\n"
        "libfile-find-rule-perl\n"
        "  Depends: <perl:any>\n"
        "    perl\n"
        "  Recommends: something\n"
    )
    parsed = debs._parse_depends(text)
    groups = parsed["libpam-modules"]
    assert [[a.name for a in g] for g in groups] == [["libc6"], ["debconf", "debconf-2.0"],
                                                     ["libpam-modules-bin"]]
    assert groups[1][1].virtual and groups[1][1].providers == ("cdebconf", "debconf")
    assert debs._choose(groups[1], set()) == "debconf"
    assert debs._choose(groups[1], {"cdebconf"}) == "cdebconf"
    perl = parsed["libfile-find-rule-perl"]
    assert len(perl) == 1 and debs._choose(perl[0], set()) == "perl"


# --------------------------------------------------------------------------- initramfs

needs_apt = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("apt-get", "apt-cache", "dpkg-deb")),
    reason="needs apt-get, apt-cache and dpkg-deb (Debian host)")

# A small package set keeps the determinism test quick; it still exercises the
# whole path: closure, download, extraction, ELF closure of a dynamic program,
# busybox applets.  The default set is built by the pipeline itself.
QUICK_PACKAGES = ("busybox-static", "iputils-ping")
QUICK_PROGRAMS = ("busybox", "ping")


@pytest.fixture(scope="session")
def deb_cache() -> Path:
    path = Path(os.environ.get("GUESTIO_DEB_CACHE", REPO / "build" / "debs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@needs_apt
def test_initramfs_is_deterministic_and_manifest_matches(tmp_path, deb_cache):
    outs = []
    for n in (1, 2):
        out = tmp_path / f"img{n}" / "initramfs.cpio"
        man = tmp_path / f"img{n}" / "initramfs.json"
        m = initramfs.build_initramfs(out, man, deb_cache, tmp_path / f"staging{n}",
                                      programs=QUICK_PROGRAMS, packages=QUICK_PACKAGES)
        outs.append((out, man, m))
    (a, man_a, m), (b, man_b, _) = outs
    assert a.read_bytes() == b.read_bytes()
    assert man_a.read_bytes() == man_b.read_bytes()

    # manifest: image hash, deb hashes, every entry with its content hash
    assert json.loads(man_a.read_text()) == m
    assert m["image"]["sha256"] == sha256_file(a) and m["image"]["size"] == a.stat().st_size
    debs = {d["package"]: d for d in m["debs"]}
    assert {"busybox-static", "iputils-ping", "libc6"} <= set(debs)
    for d in m["debs"]:
        assert sha256_file(deb_cache / d["file"]) == d["sha256"]
        assert d["version"] and d["arch"] in ("amd64", "all")
    assert debs["libc6"]["used"] and debs["iputils-ping"]["used"]

    members = {mb.name: mb for mb in cpio.read_cpio(a.read_bytes())}
    files = {f["path"]: f for f in m["files"]}
    assert set(files) == {"/" + n for n in members}
    for name, mb in members.items():
        if mb.kind == cpio.FILE:
            assert files["/" + name]["sha256"] == hashlib.sha256(mb.data).hexdigest()

    # content: init, console, busybox applets, the dynamic ping with loader and libc
    init = members["init"]
    assert init.mode == 0o100755 and init.data == initramfs.init_script()
    assert init.data.startswith(b"#!/bin/sh")
    con = members["dev/console"]
    assert con.kind == cpio.CHARDEV and (con.rdevmajor, con.rdevminor) == (5, 1)
    assert members["bin/sh"].data == b"/bin/busybox"
    for applet in ("bin/mount", "bin/tar", "sbin/poweroff", "bin/cat", "bin/ls", "bin/mkdir"):
        assert members[applet].kind == cpio.SYMLINK, applet
    assert files["/bin/sh"]["package"] == "busybox-static"
    ping = members[m["programs"]["ping"]]
    assert ping.kind == cpio.FILE and ping.data.startswith(b"\x7fELF")
    assert files["/" + m["programs"]["ping"]]["package"] == "iputils-ping"
    assert members["lib64/ld-linux-x86-64.so.2"].kind == cpio.SYMLINK
    assert "lib/x86_64-linux-gnu/libc.so.6" in members
    ping_needs = m["program_closures"]["ping"]
    assert "/" + m["programs"]["ping"] in ping_needs
    assert "/lib/x86_64-linux-gnu/libc.so.6" in ping_needs
    assert "/lib64/ld-linux-x86-64.so.2" in ping_needs
    assert m["program_closures"]["busybox"] == ["/bin/busybox"]  # static
    # nothing but the closure: no docs, no unrelated package files
    assert not any(n.startswith("usr/share/doc") for n in members)
    assert len([mb for mb in members.values() if mb.kind == cpio.FILE]) < 40
    # the extracted busybox is the one in the image (from the .deb, not the host)
    bb = (tmp_path / "staging1" / "root" / "bin" / "busybox").read_bytes()
    assert members["bin/busybox"].data == bb


@needs_apt
def test_initramfs_missing_program_is_an_error(tmp_path, deb_cache):
    with pytest.raises(image.ImageError, match="fio"):
        initramfs.build_initramfs(tmp_path / "i.cpio", tmp_path / "i.json", deb_cache,
                                  tmp_path / "st", programs=("busybox", "fio"),
                                  packages=("busybox-static",))
    assert not (tmp_path / "i.cpio").exists()


# --------------------------------------------------------------------------- data disk

needs_mke2fs = pytest.mark.skipif(shutil.which("mke2fs") is None and
                                  not Path("/sbin/mke2fs").exists(), reason="needs e2fsprogs")


@needs_mke2fs
def test_data_disk_ext4_is_deterministic(tmp_path):
    a = disk.make_data_disk(tmp_path / "a" / "d.img", 16)
    b = disk.make_data_disk(tmp_path / "b" / "d.img", 16)
    assert a.stat().st_size == 16 * 1024 * 1024
    assert sha256_file(a) == sha256_file(b)
    # ext4 superblock at 1024: magic 0xEF53, label and UUID from the label
    sb = a.read_bytes()[1024:2048]
    assert struct.unpack_from("<H", sb, 0x38)[0] == 0xEF53
    assert sb[0x78:0x88].rstrip(b"\0") == b"guestio-data"
    fs_uuid, _ = disk.label_uuids("guestio-data")
    assert sb[0x68:0x78].hex() == fs_uuid.replace("-", "")
    assert struct.unpack_from("<I", sb, 0x108)[0] == disk.FAKE_TIME  # s_mkfs_time
    c = disk.make_data_disk(tmp_path / "c.img", 16, label="other")
    assert sha256_file(c) != sha256_file(a)
    assert list(tmp_path.glob("**/.*tmp")) == []


def test_data_disk_none_is_sparse_zeros(tmp_path):
    p = disk.make_data_disk(tmp_path / "raw.img", 64, fs="none")
    assert p.stat().st_size == 64 * 1024 * 1024
    assert p.stat().st_blocks * 512 < 1024 * 1024  # sparse
    with open(p, "rb") as f:
        assert f.read(1 << 20).count(0) == 1 << 20


def test_data_disk_errors_leave_nothing(tmp_path, monkeypatch):
    with pytest.raises(disk.DiskError, match="unsupported fs"):
        disk.make_data_disk(tmp_path / "x.img", 16, fs="btrfs")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(disk.DiskError, match="mke2fs"):
        disk.make_data_disk(tmp_path / "y.img", 16)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- boot

@pytest.mark.boot
@needs_apt
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_init_runs_job_and_returns_results(tmp_path, deb_cache, guest_kernel):
    img = tmp_path / "initramfs.cpio"
    initramfs.build_initramfs(img, tmp_path / "initramfs.json", deb_cache, tmp_path / "st",
                              programs=QUICK_PROGRAMS, packages=QUICK_PACKAGES)
    job = tmp_path / "job.sh"
    job.write_text('echo "out=$GUESTIO_OUT pwd=$(pwd)"\n'
                   'cat /guestio/in/extra > "$GUESTIO_OUT/copied.txt"\n'
                   '/bin/ping -c 1 127.0.0.1 > /dev/null && echo ping-ok\n'
                   'echo to-stderr >&2\n'
                   'exit 3\n')
    (tmp_path / "extra.txt").write_text("extra input\n")
    results = tmp_path / "results.tar"
    proc = subprocess.run(
        ["timeout", "120", "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256",
         "-nographic", "-no-reboot", "-kernel", str(guest_kernel), "-initrd", str(img),
         "-append", "console=ttyS0 panic=-1 nokaslr quiet",
         "-fw_cfg", f"name=opt/guestio/job,file={job}",
         "-fw_cfg", f"name=opt/guestio/extra,file={tmp_path / 'extra.txt'}",
         "-device", "virtio-serial-pci",
         "-chardev", f"file,id=results,path={results}",
         "-device", "virtserialport,chardev=results,name=org.guestio.results"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    console = proc.stdout
    assert proc.returncode == 0, console[-3000:]
    lines = [ln.strip() for ln in console.splitlines() if "GUESTIO:" in ln]
    assert any(ln.endswith("GUESTIO: init started") for ln in lines), console[-3000:]
    assert "GUESTIO: job finished status=3" in lines
    assert any(ln.startswith("GUESTIO: results sent") for ln in lines)
    with tarfile.open(results) as tf:
        got = {m.name.lstrip("./"): tf.extractfile(m).read() for m in tf if m.isfile()}
    assert got["exit_status"] == b"3\n"
    assert got["copied.txt"] == b"extra input\n"
    log = got["job.log"].decode()
    assert "out=/guestio/out pwd=/guestio/out" in log
    assert "ping-ok" in log and "to-stderr" in log

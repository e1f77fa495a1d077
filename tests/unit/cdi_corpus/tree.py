"""Build a host tree for the CDI generator from a corpus directory (test helper, stdlib only).

A corpus directory holds:

* ``files/``: files copied as they are (``/proc/driver/nvidia``, ``/etc/ld.so.cache`` when captured);
* ``listing.txt``: what else exists, one ``TYPE PATH<TAB>LINK-TARGET`` per line, as
  ``find ... -printf '%y %p\\t%l\\n'`` writes it on the host (d directory, f file, l symlink,
  c/b device node, s socket). Files named ``lib*.so*`` become minimal ELF shared objects (ELF32 i386 in an
  ``i386-linux-gnu`` or ``lib32`` directory, else ELF64 x86-64) whose
  SONAME is the ``lib*.so.N`` link that points to them (else their own name); other files in a
  ``bin``/``sbin`` directory, and files that a link there leads to (through other listed links,
  as Debian's alternatives do), become minimal ELF executables; device nodes and sockets empty files;
* ``contents/``: optional, files whose bytes replace a listed file's (a wrapper script, say);
* when ``files/etc/ld.so.cache`` is absent, the real ``ldconfig -r TREE`` makes it: over the
  directories named in ``ldconfig.dirs`` (one a line) when the corpus has that file, else from the
  tree's own ``/etc/ld.so.conf`` when it has one (as the host's ldconfig would), else over the
  directories of the listed libraries (``ldconfig -C`` and ``-r``, as glibc ships it).

    python3 tests/unit/cdi_corpus/tree.py CORPUS_DIR DEST
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

LDCONFIG = next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
_SONAME_LINK = re.compile(r"^lib.*\.so\.\d+$")


def elf(soname: str | None = None, machine: int = 62) -> bytes:
    """A minimal little-endian ELF64 file: ET_DYN with a DT_SONAME when ``soname`` is given."""
    strtab = b"\0" + (soname or "").encode() + b"\0"
    phnum = 2
    dyn_off = 64 + 56 * phnum
    dyn = [(14, 1), (5, dyn_off + 64), (10, len(strtab)), (0, 0)] if soname else [(0, 0)] * 4
    total = dyn_off + 64 + len(strtab)
    ehdr = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF",
        2,
        1,
        1,
        0,
        0,
        b"\0" * 7,
        3,
        machine,
        1,
        0,
        64,
        0,
        0,
        64,
        56,
        phnum,
        64,
        0,
        0,
    )
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 0x1000)
    dynamic = struct.pack("<IIQQQQQQ", 2, 6, dyn_off, dyn_off, dyn_off, 64, 64, 8)
    body = b"".join(struct.pack("<qQ", tag, val) for tag, val in dyn)
    return ehdr + load + dynamic + body + strtab


def elf32(soname: str | None = None, machine: int = 3) -> bytes:
    """A minimal little-endian ELF32 file (i386 by default): ET_DYN needing libc.so.6 (so that ldconfig files it
    as a libc6 library, as it does the driver's 32-bit ones), with a DT_SONAME when ``soname`` is given."""
    strtab = b"\0libc.so.6\0" + (soname or "").encode() + b"\0"
    phnum = 2
    dyn_off = 52 + 32 * phnum
    dyn = [(1, 1), (14, 11) if soname else (0, 0), (5, dyn_off + 40), (10, len(strtab)), (0, 0)]
    total = dyn_off + 40 + len(strtab)
    ehdr = struct.pack(
        "<4sBBBBB7sHHIIIIIHHHHHH",
        b"\x7fELF",
        1,
        1,
        1,
        0,
        0,
        b"\0" * 7,
        3,
        machine,
        1,
        0,
        52,
        0,
        0,
        52,
        32,
        phnum,
        40,
        0,
        0,
    )
    load = struct.pack("<IIIIIIII", 1, 0, 0, 0, total, total, 5, 0x1000)
    dynamic = struct.pack("<IIIIIIII", 2, dyn_off, dyn_off, dyn_off, 40, 40, 6, 4)
    body = b"".join(struct.pack("<iI", tag, val) for tag, val in dyn)
    return ehdr + load + dynamic + body + strtab


# Library directories whose files are 32-bit (i386): Debian's multiarch one and the lib32 spelling.
THIRTY_TWO_BIT_DIRS = ("i386-linux-gnu", "lib32")


def parse_listing(text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head, _, target = line.partition("\t")
        kind, _, path = head.partition(" ")
        out.append((kind, path, target))
    return out


def _link_target(path: str, target: str) -> str:
    return os.path.normpath(os.path.join(os.path.dirname(path), target))


def executables(entries: list[tuple[str, str, str]]) -> set[str]:
    """Listed files that are programs: those in a bin/sbin directory, and those a link there leads to."""
    links = {path: target for kind, path, target in entries if kind == "l"}
    files = {path for kind, path, _ in entries if kind == "f"}
    out = {path for path in files if os.path.basename(os.path.dirname(path)) in ("bin", "sbin")}
    for link in links:
        if os.path.basename(os.path.dirname(link)) not in ("bin", "sbin"):
            continue
        path = link
        for _hop in range(16):
            if path not in links:
                break
            path = _link_target(path, links[path])
        if path in files:
            out.add(path)
    return out


def build(corpus: Path, dest: Path) -> Path:
    corpus, dest = Path(corpus), Path(dest)
    if (corpus / "files").is_dir():
        shutil.copytree(corpus / "files", dest, symlinks=True, dirs_exist_ok=True)
    entries = parse_listing((corpus / "listing.txt").read_text()) if (corpus / "listing.txt").exists() else []
    sonames: dict[str, str] = {}
    for kind, path, target in entries:
        name = os.path.basename(path)
        if kind == "l" and _SONAME_LINK.match(name):
            sonames[_link_target(path, target)] = name
    programs = executables(entries)
    lib_dirs: set[str] = set()
    for kind, path, target in entries:
        real = dest / path.lstrip("/")
        if kind == "d":
            real.mkdir(parents=True, exist_ok=True)
            continue
        real.parent.mkdir(parents=True, exist_ok=True)
        if real.is_symlink() or real.exists():
            continue
        if kind == "l":
            real.symlink_to(target)
            continue
        override = corpus / "contents" / path.lstrip("/")
        if override.is_file():
            data = override.read_bytes()
        elif kind == "f" and re.match(r"^lib.*\.so", real.name):
            bits32 = os.path.basename(os.path.dirname(path)) in THIRTY_TWO_BIT_DIRS
            data = (elf32 if bits32 else elf)(sonames.get(path, real.name))
            lib_dirs.add(os.path.dirname(path))
        elif kind == "f" and path in programs:
            data = elf()
        else:
            data = b""
        real.write_bytes(data)
    cache = dest / "etc" / "ld.so.cache"
    if not cache.exists() and lib_dirs:
        if LDCONFIG is None:
            raise RuntimeError("ldconfig is needed to build this corpus's ld.so.cache")
        cache.parent.mkdir(parents=True, exist_ok=True)
        config, dirs = "/dev/null", sorted(lib_dirs)
        if (corpus / "ldconfig.dirs").is_file():
            dirs = [d for d in (corpus / "ldconfig.dirs").read_text().split() if d.startswith("/")]
        elif (dest / "etc" / "ld.so.conf").is_file():
            config, dirs = "/etc/ld.so.conf", []
        subprocess.run(
            [LDCONFIG, "-r", str(dest), "-C", "/etc/ld.so.cache", "-f", config, "-X", *dirs],
            check=True,
            capture_output=True,
        )
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), Path(sys.argv[2])))

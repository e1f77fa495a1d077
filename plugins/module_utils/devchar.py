# Copyright: gpu-install contributors
# Apache License 2.0
"""The ``/dev/char/MAJOR:MINOR`` links of NVIDIA device nodes (stdlib only).

runc's systemd cgroup driver names each allowed device to systemd by its
``/dev/char/MAJOR:MINOR`` path.  udev makes those links for the devices it
creates, but the NVIDIA nodes are made by nvidia-modprobe or the driver's
installer, so the links are missing; systemd then leaves the GPUs out of the
container's device rules, and the next ``systemctl daemon-reload`` takes the
GPUs away from running containers ("Failed to initialize NVML: Unknown Error"
on cgroup v2).  NVIDIA's fix is to create the links; this is that fix for
hosts without the NVIDIA Container Toolkit's ``nvidia-ctk``.
"""

from __future__ import annotations

import os
import re
import stat
from typing import List, Tuple

NODE_RE = re.compile(r"^nvidia(?:\d+|ctl|-uvm|-uvm-tools|-modeset|-nvswitch\d+|-nvlink|-caps-imex-channels)$")
CAPS_DIR = "nvidia-caps"


def nodes(dev: str = "/dev") -> List[Tuple[str, int, int]]:
    """(path, major, minor) of every NVIDIA character device under ``dev``, sorted."""
    found: List[Tuple[str, int, int]] = []
    candidates: List[str] = []
    try:
        candidates = [os.path.join(dev, n) for n in os.listdir(dev) if NODE_RE.match(n)]
    except OSError:
        return []
    try:
        caps = os.path.join(dev, CAPS_DIR)
        candidates += [os.path.join(caps, n) for n in os.listdir(caps)]
    except OSError:
        pass
    for path in candidates:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            found.append((path, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return sorted(found)


def missing(dev: str = "/dev") -> List[Tuple[str, str]]:
    """(link, target) for each NVIDIA node whose ``/dev/char`` link is absent or points elsewhere."""
    out: List[Tuple[str, str]] = []
    char_dir = os.path.join(dev, "char")
    for path, major, minor in nodes(dev):
        link = os.path.join(char_dir, f"{major}:{minor}")
        target = os.path.relpath(path, char_dir)
        try:
            if os.path.samefile(link, path):
                continue
        except OSError:
            pass
        out.append((link, target))
    return out


def ensure(dev: str = "/dev", check: bool = False) -> List[Tuple[str, str]]:
    """Create the missing links (atomically: a temporary link renamed over the old one); return them."""
    todo = missing(dev)
    if check or not todo:
        return todo
    os.makedirs(os.path.join(dev, "char"), mode=0o755, exist_ok=True)
    for link, target in todo:
        tmp = f"{link}.gpu-install.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return todo

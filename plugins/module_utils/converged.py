# Copyright: gpu-install contributors
# Apache License 2.0
"""The converged-state receipt: what a host looked like when a full run left it converged.

A full run of the site playbook reads every file, unit and package it manages, finds nothing to change
and still costs one module run per task. The receipt lets a later run skip that work when nothing it
depends on has moved: after a successful full run (no reboot pending) the host's observable state is
written to RECEIPT_PATH together with a key (the collection's content and the settings, computed on the
controller); a later run whose key and observation both equal the receipt's is converged by definition,
because the same code with the same settings on the same state found nothing to change.

What is observed (``observe``), each part digested on its own so that a mismatch can be named:

* the boot (boot_id), the kernel (release, command line), loaded NVIDIA/nouveau modules, the loaded
  driver's version, the NVIDIA PCI devices and the /dev nodes and /dev/char links they give;
* the package databases (dpkg's status file, rpm's database: size, mtime and inode, since both are
  rewritten by rename on every change);
* every file below the trees gpu-install writes or reads (Docker's, apt's, dnf's, modprobe's, systemd's
  unit directory with its enablement symlinks, CDI, udev, the container toolkit's, gpu-install's own
  state): path, type, mode, owner, and content (a symlink's target);
* the state of the units the roles manage (``systemctl show``: load, active and unit-file state).

Anything else a run's outcome depends on either lies in one of these (an operator's edit of
daemon.json, a removed package, a stopped docker, a changed setting) or comes with a reboot. Stdlib only:
imported by the ``gpu_install.nvidia.converged`` module on managed hosts (Python >= 3.8) and its tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils.fileio import write_atomic

SCHEMA = 1
STATE_DIR = "/var/lib/gpu-install"
RECEIPT_PATH = STATE_DIR + "/converged.json"

# Below these every entry counts (recursively; a missing tree is observed as missing).
TREES = {
    "docker": ("/etc/docker", "/etc/default/docker", "/etc/sysconfig/docker", "/var/snap/docker/current/config"),
    "containerd": ("/etc/containerd",),
    "apt": (
        "/etc/apt/sources.list",
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences",
        "/etc/apt/preferences.d",
        "/etc/apt/apt.conf.d",
        "/etc/apt/keyrings",
        "/etc/apt/trusted.gpg",
        "/etc/apt/trusted.gpg.d",
        "/usr/share/keyrings",
    ),
    "dnf": ("/etc/yum.repos.d", "/etc/dnf", "/etc/yum.conf", "/etc/pki/rpm-gpg"),
    "modules": ("/etc/modprobe.d", "/etc/modules-load.d", "/etc/modules"),
    "systemd": ("/etc/systemd/system",),
    "cdi": ("/etc/cdi", "/var/run/cdi"),
    "udev": ("/etc/udev/rules.d",),
    "toolkit": ("/etc/nvidia-container-runtime", "/etc/nvidia-container-toolkit"),
}
# gpu-install's own state directory, less what every run rewrites (its logs, Ansible's home, this receipt)
# and what does not shape the host (cloud-init's record of its bootstrap, removal's record of gpu-install's files).
STATE_SKIP = frozenset(("runs", "ansible", "converged.json", "cloud-init.json", "files.json"))
# The package databases: rewritten by rename on every install, removal or upgrade.
PACKAGE_DBS = (
    "/var/lib/dpkg/status",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/Packages",
)
UNITS = (
    "docker.service",
    "docker.socket",
    "containerd.service",
    "nvidia-persistenced.service",
    "nvidia-fabricmanager.service",
    "gpu-install-cdi-refresh.service",
)
# Files larger than this are observed by size and mtime rather than content (keyrings, certificates and
# configuration are far smaller).
CONTENT_LIMIT = 1 << 20
MAX_ENTRIES = 20000  # a tree larger than this is not one gpu-install manages: observed by its top's stat


def _stat_line(path: str, st: os.stat_result) -> str:
    return f"{path} {st.st_mode:o} {st.st_uid} {st.st_gid}"


def _file_line(path: str, st: os.stat_result) -> str:
    line = _stat_line(path, st)
    if stat.S_ISLNK(st.st_mode):
        try:
            return line + " -> " + os.readlink(path)
        except OSError:
            return line + " -> ?"
    if not stat.S_ISREG(st.st_mode):
        return line
    if st.st_size > CONTENT_LIMIT:
        return f"{line} {st.st_size} {st.st_mtime_ns}"
    try:
        with open(path, "rb") as fh:
            return line + " " + hashlib.sha256(fh.read()).hexdigest()
    except OSError as exc:
        return f"{line} unreadable:{exc.errno}"


def _walk(top: str, out: List[str], skip: Iterable[str] = ()) -> None:
    try:
        st = os.lstat(top)
    except OSError:
        out.append(top + " missing")
        return
    if not stat.S_ISDIR(st.st_mode):
        out.append(_file_line(top, st))
        return
    out.append(_stat_line(top, st))
    stack = [top]
    count = 0
    skip = frozenset(skip)
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            out.append(f"{directory} unreadable:{exc.errno}")
            continue
        for entry in entries:
            if directory == top and entry.name in skip:
                continue
            count += 1
            if count > MAX_ENTRIES:
                out.append(top + " too-large")
                return
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(est.st_mode):
                out.append(_stat_line(entry.path, est))
                stack.append(entry.path)
            else:
                out.append(_file_line(entry.path, est))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return "missing"


def _kernel() -> List[str]:
    modules = [
        line.split(" ", 1)[0] for line in _read("/proc/modules").splitlines() if line.startswith(("nvidia", "nouveau"))
    ]
    return [
        "boot " + _read("/proc/sys/kernel/random/boot_id").strip(),
        "release " + os.uname().release,
        "cmdline " + _read("/proc/cmdline").strip(),
        "modules " + " ".join(sorted(modules)),
        "driver " + _read("/proc/driver/nvidia/version").strip(),
    ]


def _devices() -> List[str]:
    out = []
    base = "/sys/bus/pci/devices"
    try:
        addresses = sorted(os.listdir(base))
    except OSError:
        addresses = []
    for address in addresses:
        vendor = _read(os.path.join(base, address, "vendor")).strip()
        if vendor == "0x10de":
            device = _read(os.path.join(base, address, "device")).strip()
            driver = os.path.basename(os.path.realpath(os.path.join(base, address, "driver")))
            out.append(f"pci {address} {device} {driver}")
    try:
        names = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
    except OSError:
        names = []
    out.extend("dev " + n for n in names)
    try:
        links = sorted(os.listdir("/dev/char"))
    except OSError:
        links = []
    for name in links:
        try:
            target = os.readlink(os.path.join("/dev/char", name))
        except OSError:
            continue
        if "nvidia" in target:
            out.append(f"char {name} -> {target}")
    return out


def _packages() -> List[str]:
    out = []
    for path in PACKAGE_DBS:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append(f"{path} {st.st_size} {st.st_mtime_ns} {st.st_ino}")
    return out


def _units() -> List[str]:
    try:
        proc = subprocess.run(
            ["systemctl", "show", "--property=Id,LoadState,ActiveState,UnitFileState", "--", *UNITS],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"systemctl unavailable: {type(exc).__name__}"]
    return proc.stdout.split("\n\n")


def observe(state_dir: str = STATE_DIR) -> Dict[str, str]:
    """The host's observable state, one digest per part (part name -> hex digest)."""
    parts: Dict[str, List[str]] = {
        "kernel": _kernel(),
        "devices": _devices(),
        "packages": _packages(),
        "units": _units(),
    }
    for name, tops in TREES.items():
        lines: List[str] = []
        for top in tops:
            _walk(top, lines)
        parts["files:" + name] = lines
    state: List[str] = []
    _walk(state_dir, state, skip=STATE_SKIP)
    parts["files:gpu-install"] = state
    return {name: hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
            for name, lines in parts.items()}  # fmt: skip


# What each part of the observation covers, as a run's summary names it when it differs.
PART_LABELS = {
    "kernel": "the boot, kernel or loaded driver",
    "devices": "the NVIDIA devices",
    "packages": "the installed packages",
    "units": "the state of docker, containerd or the NVIDIA services",
    "files:gpu-install": "gpu-install's state in " + STATE_DIR,
}
PART_LABELS.update(("files:" + name, "files below " + ", ".join(tops)) for name, tops in TREES.items())


def load(path: str = RECEIPT_PATH) -> Optional[Dict[str, Any]]:
    """The receipt at path, or None when there is none or it is not one this version wrote."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    if not isinstance(data.get("key"), str) or not isinstance(data.get("parts"), dict):
        return None
    return data


def compare(receipt: Optional[Dict[str, Any]], key: str, parts: Dict[str, str]) -> Tuple[bool, List[str]]:
    """(converged, what differs): converged when the receipt's key and every part equal these."""
    if receipt is None:
        return False, ["no earlier run left the host converged"]
    drift = []
    if receipt["key"] != key:
        drift.append("the settings or gpu-install itself changed")
    recorded = receipt["parts"]
    drift.extend(
        PART_LABELS.get(name, name) + " changed"
        for name in sorted(set(parts) | set(recorded))
        if parts.get(name) != recorded.get(name)
    )
    return not drift, drift


def write(key: str, parts: Dict[str, str], path: str = RECEIPT_PATH, facts: Optional[Dict[str, Any]] = None
          ) -> Dict[str, Any]:  # fmt: skip
    receipt = {"schema": SCHEMA, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": key,
               "parts": parts, "facts": facts or {}}  # fmt: skip
    write_atomic(path, (json.dumps(receipt, indent=1, sort_keys=True) + "\n").encode("utf-8"), mode=0o644)
    return receipt


def remove(path: str = RECEIPT_PATH) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def check(key: str, enabled: bool, path: str = RECEIPT_PATH, check_mode: bool = False,
          state_dir: str = STATE_DIR) -> Dict[str, Any]:  # fmt: skip
    """The result of state=check: converged, drift, written; a stale receipt is removed (not in check mode)."""
    receipt = load(path)
    if not enabled:
        ok, drift = False, ["fast path turned off (gpu_install_fast_path: false)"]
    else:
        ok, drift = compare(receipt, key, observe(state_dir))
    if not ok and not check_mode:
        remove(path)
    result: Dict[str, Any] = {"changed": False, "converged": ok, "drift": drift, "key": key}
    if receipt is not None:
        result["written"] = receipt.get("written")
    facts = receipt.get("facts") if ok and receipt is not None else None
    if isinstance(facts, dict) and facts:
        # What the last full run detected holds while nothing it read has changed: the fast path detects nothing.
        result["ansible_facts"] = {"gpu_install": facts}
    return result


def record(key: str, path: str = RECEIPT_PATH, check_mode: bool = False, state_dir: str = STATE_DIR,
           facts: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:  # fmt: skip
    """The result of state=write: the receipt of this host's state and facts, written (not in check mode)."""
    result: Dict[str, Any] = {"changed": False, "converged": False, "key": key}
    if not check_mode:
        # Made before the observation, which sees the state directory (the receipt's own, usually).
        for directory in (os.path.dirname(path), state_dir):
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o755)
        result["written"] = write(key, observe(state_dir), path, facts)["written"]
    return result


def run(state: str, key: str, enabled: bool, path: str, check_mode: bool,
        facts: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:  # fmt: skip
    """The converged module's result for its arguments, a failed one when the receipt cannot be updated.

    The module and its action (which runs this in-process on the local connection) both return this.
    """
    try:
        if state == "write":
            return record(key, path, check_mode, facts=facts)
        return check(key, enabled, path, check_mode)
    except OSError as exc:
        reason = f"cannot update the receipt {path} ({exc}): fix it and run again."
        return {"failed": True, "changed": False, "msg": reason}

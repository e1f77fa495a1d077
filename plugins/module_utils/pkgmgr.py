# Copyright: gpu-install contributors
# Apache License 2.0
"""Package installs by argv (apt-get, dnf), stdlib only.

No python3-apt or python3-dnf is needed, so plan works on minimal hosts:
check mode simulates (``apt-get -s``), a real run waits for the package
manager's lock (naming who holds it) and finishes an interrupted dpkg first.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, gpu_detect

DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")
APT_LISTS_LOCK = "/var/lib/apt/lists/lock"
RPM_LOCKS = ("/var/lib/rpm/.rpm.lock", "/usr/lib/sysimage/rpm/.rpm.lock")
DPKG_UPDATES = "/var/lib/dpkg/updates"

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "APT_LISTCHANGES_FRONTEND": "none"}
APT_INSTALL = [
    "apt-get",
    "install",
    "-y",
    "-q",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
]
# apt-get's words for a package source problem (exit class 5).
SOURCE_ERRORS = (
    "Unable to locate package",
    "has no installation candidate",
    "Failed to fetch",
    "Unable to fetch some archives",
    "Version '",
    "The repository",
    "NO_PUBKEY",
    "is not signed",
)

Runner = Callable[[Sequence[str], Optional[Dict[str, str]]], Tuple[int, str, str]]


class PackageError(errors.Failure):
    """A package install problem with its exit class."""


def run(argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(list(argv), capture_output=True, env=full, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def proxy_env(proxy: str) -> Dict[str, str]:
    if not proxy:
        return {}
    return {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy}


def manager(facts: Dict[str, Any]) -> str:
    osf = facts.get("os")
    family = osf.get("family") if isinstance(osf, dict) else None
    return "dnf" if family == "redhat" else "apt"


# -- who holds the lock --------------------------------------------------------
def _lock_holders(paths: Sequence[str]) -> List[Tuple[int, str]]:
    """(pid, command) of processes holding a POSIX/flock lock on any of paths (from /proc/locks)."""
    inodes = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        inodes[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = path
    holders: List[Tuple[int, str]] = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return holders
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:123456 0 EOF" (a "->" marks a waiter)
        if "->" in fields or len(fields) < 6:
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if key in inodes and pid > 0 and pid != os.getpid():
            holders.append((pid, _command(pid)))
    return holders


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return "unknown"
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)[:200] or "unknown"


def wait_for_lock(
    paths: Sequence[str],
    timeout: int,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> List[Tuple[int, str]]:
    """Wait until nobody holds the package manager's lock; raise exit class 6 after timeout.

    Returns who held it while we waited (for the run's log).
    """
    seen: List[Tuple[int, str]] = []
    deadline = clock() + max(0, timeout)
    while True:
        holders = _lock_holders(paths)
        if not holders:
            return seen
        for holder in holders:
            if holder not in seen:
                seen.append(holder)
        if clock() >= deadline:
            pid, command = holders[0]
            raise PackageError(
                errors.BUSY,
                f"the package manager lock is held by PID {pid} ({command}) and was not released within "
                f"{timeout} s: wait for that process to finish (or stop it), then run again.",
            )
        sleep(1.0)


# -- apt ------------------------------------------------------------------------
_INST_RE = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+)")


def installed_versions() -> Dict[str, str]:
    packages, _problems = gpu_detect.read_packages(gpu_detect.Host(None))
    return {name: str(pkg.get("version")) for name, pkg in packages.items()}


def apt_names(prefixes: Sequence[str], runner: Runner = run) -> List[str]:
    """The package names apt offers that start with one of ``prefixes`` (``apt-cache pkgnames``; reads only).

    A host whose apt never fetched its lists (fresh cloud images) offers nothing here: the caller says so.
    """
    names: List[str] = []
    for prefix in prefixes:
        rc, out, _err = runner(["apt-cache", "pkgnames", prefix], dict(APT_ENV))
        if rc == 0:
            names.extend(line.strip() for line in out.splitlines() if line.strip())
    return sorted(set(names))


def dpkg_depends(pattern: str, runner: Runner = run) -> Dict[str, str]:
    """Installed packages matching a dpkg-query ``pattern``, name -> Depends (reads only)."""
    rc, out, _err = runner(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Depends}\n", pattern], dict(APT_ENV)
    )
    found: Dict[str, str] = {}
    if rc not in (0, 1):
        return found
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith("ii"):
            found[parts[1]] = parts[2]
    return found


def _split(spec: str, mgr: str) -> Tuple[str, Optional[str]]:
    if mgr == "apt" and "=" in spec:
        name, version = spec.split("=", 1)
        return name, version
    return spec, None


def missing(specs: Sequence[str], mgr: str, installed: Dict[str, str]) -> List[str]:
    out = []
    for spec in specs:
        name, version = _split(spec, mgr)
        have = installed.get(name)
        if have is None or (version is not None and not have.startswith(version.rstrip("*"))):
            out.append(spec)
    return out


def simulate_apt(
    specs: Sequence[str], env: Dict[str, str], recommends: bool, runner: Runner = run
) -> List[Dict[str, str]]:
    """What `apt-get install` would do, from `apt-get -s` (no lock, no change)."""
    argv = ["apt-get", "install", "-s", "-q"] + ([] if recommends else ["--no-install-recommends"]) + list(specs)
    rc, out, err = runner(argv, dict(APT_ENV, **env))
    if rc != 0:
        raise _apt_failure(" ".join(specs), out + err)
    plan = []
    for line in out.splitlines():
        match = _INST_RE.match(line)
        if match:
            plan.append({"name": match.group(1), "version": match.group(3), "replaces": match.group(2) or ""})
    return plan


def _apt_failure(what: str, text: str) -> PackageError:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(("E:", "W:")) or "Failed" in ln]
    detail = next((ln for ln in lines if ln.startswith("E:")), lines[0] if lines else text.strip()[-300:])
    detail = detail[2:].strip() if detail.startswith("E:") else detail
    if any(marker in text for marker in SOURCE_ERRORS):
        return PackageError(
            errors.PACKAGE_SOURCE,
            f"apt cannot install {what}: {detail}; check the package sources (gpu_install_repositories, "
            "gpu_install_proxy) and run again.",
        )
    return PackageError(errors.INTERNAL, f"apt-get failed installing {what}: {detail}")


def _dpkg_audit(runner: Runner) -> str:
    """What ``dpkg --audit`` lists: packages left half-installed, unpacked or half-configured."""
    _rc, out, _err = runner(["dpkg", "--audit"], dict(APT_ENV))
    return out.strip()


def _needs_reinstall(runner: Runner) -> List[str]:
    """Packages dpkg marks half-installed or reinstall-required (``dpkg-query``'s db:Status-Abbrev)."""
    _rc, out, _err = runner(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${binary:Package}\\n"], dict(APT_ENV))
    names = []
    for line in out.splitlines():
        abbrev, name = line[:3], line[3:].strip()
        if name and len(abbrev) == 3 and (abbrev[1] == "H" or abbrev[2] == "R"):
            names.append(name)
    return names


def recover_dpkg(runner: Runner = run, env: Optional[Dict[str, str]] = None) -> bool:
    """Finish a dpkg run that was interrupted: journal files left in /var/lib/dpkg/updates, or packages
    left half-installed, unpacked or half-configured (what ``dpkg --audit`` lists).

    ``dpkg --configure -a`` first, as apt asks; a package whose unpack was cut short cannot be configured
    (it needs its files again), so ``apt-get install -f`` reinstalls what is still listed after that.
    """
    try:
        pending = [n for n in os.listdir(DPKG_UPDATES) if n.isdigit()]
    except OSError:
        return False
    if not pending and not _dpkg_audit(runner):
        return False
    rc, out, err = runner(["dpkg", "--configure", "-a"], dict(APT_ENV))
    if rc == 0 and not _dpkg_audit(runner):
        return True
    # A package killed during its unpack is half-installed (reinstall required): only a reinstall mends it.
    broken = _needs_reinstall(runner)
    argv = APT_INSTALL + ["-f"] + (["--reinstall"] + broken if broken else [])
    rc, out, err = runner(argv, dict(APT_ENV, **(env or {})))
    left = _dpkg_audit(runner)
    if rc != 0 or left:
        detail = (left or err.strip() or out.strip())[-300:]
        raise PackageError(
            errors.HOST_ERROR,
            f"dpkg --configure -a and apt-get install -f could not finish an interrupted install: {detail}",
        )
    return True


def apt_install(
    specs: Sequence[str], env: Dict[str, str], recommends: bool, lock_timeout: int, runner: Runner = run
) -> str:
    wait_for_lock(DPKG_LOCKS, lock_timeout)
    recover_dpkg(runner, env)
    argv = APT_INSTALL + ([] if recommends else ["--no-install-recommends"])
    # apt waits on its own frontend lock too, should another process take it between our check and now.
    argv += ["-o", f"DPkg::Lock::Timeout={max(0, lock_timeout)}"] + list(specs)
    rc, out, err = runner(argv, dict(APT_ENV, **env))
    if rc != 0:
        raise _apt_failure(" ".join(specs), out + err)
    return out


def apt_update(env: Dict[str, str], lock_timeout: int, runner: Runner = run) -> None:
    wait_for_lock((APT_LISTS_LOCK,) + DPKG_LOCKS, lock_timeout)
    rc, out, err = runner(
        ["apt-get", "update", "-q", "-o", f"DPkg::Lock::Timeout={max(0, lock_timeout)}"], dict(APT_ENV, **env)
    )
    if rc != 0 or "\nE: " in "\n" + out + err or "\nW: Failed to fetch" in "\n" + err:
        raise _apt_failure("the package lists", out + err)


def apt_remove(names: Sequence[str], lock_timeout: int, runner: Runner = run, purge: bool = False) -> str:
    """Remove packages (purge: their configuration files too, as ``apt-get purge``)."""
    wait_for_lock(DPKG_LOCKS, lock_timeout)
    recover_dpkg(runner)
    argv = ["apt-get", "purge" if purge else "remove", "-y", "-q", "-o", f"DPkg::Lock::Timeout={max(0, lock_timeout)}"]
    rc, out, err = runner(argv + list(names), dict(APT_ENV))
    if rc != 0:
        raise _apt_failure(" ".join(names), out + err)
    return out


# -- dnf ------------------------------------------------------------------------
def dnf_install(specs: Sequence[str], env: Dict[str, str], lock_timeout: int, check: bool, runner: Runner = run) -> str:
    if not check:
        wait_for_lock(RPM_LOCKS, lock_timeout)
    argv = ["dnf", "install", "-y", "-q"] + (["--assumeno"] if check else []) + list(specs)
    rc, out, err = runner(argv, dict({"LC_ALL": "C"}, **env))
    if rc != 0 and not (check and "Operation aborted" in out + err):
        text = out + err
        code = (
            errors.PACKAGE_SOURCE if ("No match for argument" in text or "Cannot download" in text) else errors.INTERNAL
        )
        raise PackageError(
            code, f"dnf cannot install {' '.join(specs)}: {text.strip().splitlines()[-1] if text.strip() else rc}"
        )
    return out

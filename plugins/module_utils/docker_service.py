# Copyright: gpu-install contributors
# Apache License 2.0
"""dockerd as a service: flag conflicts, reload or restart, readiness, rollback (stdlib only)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors
from ansible_collections.gpu_install.nvidia.plugins.module_utils.fileio import write_atomic

DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_PIDFILE = "/var/run/docker.pid"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
ENV_FILES = (
    ("/etc/sysconfig/docker", ("OPTIONS", "other_args")),
    ("/etc/default/docker", ("DOCKER_OPTS",)),
)
# daemon.json keys gpu-install writes -> the dockerd flags that set the same thing.
FLAGS_FOR_KEY: Dict[str, Tuple[str, ...]] = {
    "default-runtime": ("--default-runtime",),
    "runtimes": ("--add-runtime",),
    "features": ("--feature",),
    "node-generic-resources": ("--node-generic-resource",),
}


class ServiceError(errors.Failure):
    """dockerd did not come back (exit class 7), or another service failure."""


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


# -- flag conflicts ---------------------------------------------------------------
def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path


def _unit_files(service: str, root: str = "/") -> List[str]:
    files = []
    for base in UNIT_DIRS:
        unit = os.path.join(base, f"{service}.service")
        if os.path.isfile(_under(root, unit)):
            files.append(unit)
            break
    for base in UNIT_DIRS:
        drop = os.path.join(base, f"{service}.service.d")
        if os.path.isdir(_under(root, drop)):
            names = sorted(os.listdir(_under(root, drop)))
            files.extend(os.path.join(drop, n) for n in names if n.endswith(".conf"))
    return files


def _words(text: str) -> List[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()


def _flag_hits(text: str, flags: Sequence[str]) -> bool:
    # An environment file quotes the whole option string: unquote it, then split it into words.
    words = [w for part in _words(text) for w in _words(part)]
    return any(w == f or w.startswith(f + "=") for w in words for f in flags)


def flag_conflicts(keys: Sequence[str], service: str = "docker", root: str = "/") -> List[Dict[str, Any]]:
    """Places outside daemon.json that set one of keys as a dockerd flag: [{file, line, key, text}].

    ``root`` reads the files below another directory (tests, captured trees); paths are reported as on the host.
    """
    flags = {k: FLAGS_FOR_KEY[k] for k in keys if k in FLAGS_FOR_KEY}
    found: List[Dict[str, Any]] = []
    sources: List[Tuple[str, Optional[Tuple[str, ...]]]] = [(f, None) for f in _unit_files(service, root)]
    sources += [(path, names) for path, names in ENV_FILES]
    for path, names in sources:
        try:
            with open(_under(root, path), encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", ";")):
                continue
            if names is None:
                if not re.match(r"^(ExecStart|Environment)\s*=", stripped):
                    continue
            elif not any(re.match(rf"^(export\s+)?{n}\s*=", stripped) for n in names):
                continue
            for key, key_flags in flags.items():
                if _flag_hits(stripped.split("=", 1)[1], key_flags):
                    found.append({"file": path, "line": number, "key": key, "text": stripped[:200]})
    return found


# -- the daemon's own view ----------------------------------------------------------
class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_info(sock_path: str = DOCKER_SOCKET, timeout: float = 5.0) -> Optional[Dict[str, Any]]:
    """GET /info from dockerd's socket; None when it does not answer."""
    conn = _UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request("GET", "/info")
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        data = json.loads(resp.read().decode("utf-8", "replace"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def ready(info: Optional[Dict[str, Any]], runtime: Optional[str], default: Optional[str], cdi: Optional[bool]) -> bool:
    if info is None:
        return False
    runtimes = info.get("Runtimes") or {}
    if runtime and runtime not in runtimes:
        return False
    if default and info.get("DefaultRuntime") != default:
        return False
    if cdi and not info.get("CDISpecDirs"):
        return False
    return True


def wait_ready(
    runtime: Optional[str],
    default: Optional[str],
    cdi: Optional[bool],
    timeout: float,
    sock_path: str = DOCKER_SOCKET,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Tuple[bool, Optional[Dict[str, Any]]]:
    deadline = clock() + timeout
    info = None
    while True:
        info = docker_info(sock_path)
        if ready(info, runtime, default, cdi):
            return True, info
        if clock() >= deadline:
            return False, info
        sleep(0.5)


# -- acting on the service ---------------------------------------------------------
def _run(argv: Sequence[str]) -> Tuple[int, str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, check=False, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def _dockerd_pid() -> Optional[int]:
    try:
        with open(DOCKER_PIDFILE, encoding="ascii") as fh:
            pid = int(fh.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def signal_or_restart(action: str, service: str, flavour: Optional[str]) -> Tuple[bool, str]:
    """Reload (SIGHUP to dockerd's main PID) or restart; returns (ok, output)."""
    if flavour == "snap":
        return _ok(_run(["snap", "restart", "docker"]))
    if systemd_running():
        active = _run(["systemctl", "is-active", "--quiet", service])[0] == 0
        if action == "restart" or not active:
            _run(["systemctl", "reset-failed", service])
            return _ok(_run(["systemctl", "restart", service]))
        # The unit's ExecReload needs /bin/kill, which minimal hosts lack: signal the main PID directly.
        return _ok(_run(["systemctl", "kill", "--kill-whom=main", "--signal=HUP", service]))
    pid = _dockerd_pid()
    if pid is None:
        return False, "dockerd is not running and no service manager can start it"
    if action == "restart":
        return False, "dockerd runs outside a service manager: restart it by hand to apply the new configuration"
    os.kill(pid, 1)
    return True, ""


def _ok(result: Tuple[int, str]) -> Tuple[bool, str]:
    return result[0] == 0, result[1]


def dockerd_error_line(service: str, since: float) -> str:
    """dockerd's own words about why it failed, from the journal."""
    if not shutil.which("journalctl"):
        return ""
    rc, out = _run(
        ["journalctl", "-u", service, "--no-pager", "-o", "cat", "--since", f"@{int(since) - 1}", "-n", "200"]
    )
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    patterns = ("unable to configure the Docker daemon", "failed to start daemon", "level=fatal", "Error reloading")
    for pattern in patterns:
        for line in reversed(lines):
            if pattern.lower() in line.lower():
                return _strip_log_prefix(line)
    for line in reversed(lines):
        if "level=error" in line:
            return _strip_log_prefix(line)
    return ""


def _strip_log_prefix(line: str) -> str:
    match = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    return match.group(1).replace('\\"', '"') if match else line[:300]


def restore(path: str, backup: Optional[str]) -> None:
    """Put the previous daemon.json back (or remove the one this run created)."""
    real = os.path.realpath(path)
    if backup:
        tmp = f"{real}.gpu-install.rollback"
        shutil.copy2(backup, tmp)
        os.replace(tmp, real)
    elif os.path.exists(real):
        os.unlink(real)


def _with_keys(path: str, keys: Dict[str, Any]) -> Optional[bytes]:
    """Write ``keys`` into daemon.json over what it says now; returns the bytes it had (None: there was no file)."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as fh:
            final: Optional[bytes] = fh.read()
    except FileNotFoundError:
        final = None
    doc = json.loads(final.decode("utf-8")) if final else {}
    doc.update(keys)
    st = os.stat(real) if final is not None else None
    write_atomic(real, (json.dumps(doc, indent=2) + "\n").encode(), st.st_mode & 0o7777 if st else 0o644,
                 st.st_uid if st else 0, st.st_gid if st else 0, like=real if st else None)  # fmt: skip
    return final


def _put_back(path: str, final: Optional[bytes]) -> None:
    real = os.path.realpath(path)
    if final is None:
        os.unlink(real)
    else:
        st = os.stat(real)
        write_atomic(real, final, st.st_mode & 0o7777, st.st_uid, st.st_gid, like=real)


def apply(
    action: str,
    service: str,
    flavour: Optional[str],
    path: str,
    backup: Optional[str],
    runtime: Optional[str],
    default: Optional[str],
    cdi: Optional[bool],
    timeout: float,
    reload_keys: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Reload or restart, wait for dockerd to show the new configuration; roll back on failure (exit 7).

    ``reload_keys``: keys a reload must set although the file leaves them out. dockerd's reload applies only what
    the file sets, so a key that went (gpu-install's default-runtime, on removal) would keep its old value in the
    running daemon; the file says them for the reload (their values as dockerd's defaults), then gets its own
    bytes back, and the running daemon is as a restart would leave it, its containers still running."""
    started = time.time()
    final: Optional[bytes] = None
    bridged = bool(reload_keys) and action == "reload"
    if bridged:
        final = _with_keys(path, dict(reload_keys or {}))
    ok, output = signal_or_restart(action, service, flavour)
    came_back = False
    info = None
    if ok:
        came_back, info = wait_ready(runtime, default, cdi, timeout)
    if bridged:
        _put_back(path, final)
    if came_back:
        return {"action": action, "default_runtime": (info or {}).get("DefaultRuntime")}
    last = output.strip().splitlines()
    reason = dockerd_error_line(service, started) or (last[-1] if last else "dockerd did not answer")
    restore(path, backup)
    ok2, output2 = signal_or_restart("restart", service, flavour)
    back_again = ok2 and wait_ready(None, None, None, timeout)[0]
    tail = (
        f"the previous {path} was put back and Docker runs with it again"
        if back_again
        else f"the previous {path} was put back, but Docker did not start with it either"
    )
    raise ServiceError(
        errors.ENGINE_ROLLED_BACK,
        f"Docker did not come back with the new configuration ({reason}); {tail}: fix the cause, then run again.",
    )

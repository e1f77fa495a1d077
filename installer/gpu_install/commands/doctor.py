"""gpu-install doctor: what stands between this host and GPU containers, with fixes.

This module gathers (the host's facts, NVML, the installed kernels, the NVIDIA module's signature,
Docker's /info and the image's environment over its socket, the CDI spec, the settings) and prints;
the checks themselves are pure functions in ``gpu_install.doctor_checks``. Nothing here changes the
host or a GPU setting.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import urllib.parse
from typing import Any

from .. import doctor_checks, doctor_paths
from ..collection import module_utils
from ..output import emit_json

NVIDIA_TAINT = "/sys/module/nvidia/taint"
MARKS = {
    "pass": "[green]pass[/green]",
    "fail": "[red]FAIL[/red]",
    "warn": "[yellow]warn[/yellow]",
    "info": "[cyan]info[/cyan]",
    "skip": "[dim]skip[/dim]",
}


# ---------------------------------------------------------------------------
# Gathering (the real things)
# ---------------------------------------------------------------------------
def docker_socket() -> str:
    """DOCKER_HOST when it names a unix socket, else Docker's default socket."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return str(module_utils("docker_service").DOCKER_SOCKET)


def gather_docker(sock: str) -> dict[str, Any]:
    info = module_utils("docker_service").docker_info(sock)
    error = None
    if info is None:
        if not os.path.exists(sock):
            error = "absent"
        elif not os.access(sock, os.R_OK | os.W_OK):
            error = "denied"
        else:
            error = "no_answer"
    return {"socket": sock, "info": info, "error": error}


def gather_image(sock: str, name: str) -> dict[str, Any]:
    """The image's Config.Env from GET /images/NAME/json: {name, found, env, error}."""
    docker_service = module_utils("docker_service")
    conn = docker_service._UnixHTTPConnection(sock, 10.0)
    out: dict[str, Any] = {"name": name, "found": False, "env": [], "error": None}
    try:
        conn.request("GET", "/images/" + urllib.parse.quote(name, safe="/:@") + "/json")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 404:
            return out
        if resp.status != 200:
            out["error"] = f"Docker answered HTTP {resp.status}"
            return out
        data = json.loads(body.decode("utf-8", "replace"))
        config = data.get("Config") if isinstance(data, dict) else None
        out["found"] = True
        out["id"] = data.get("Id")
        out["env"] = [str(e) for e in (config or {}).get("Env") or []]
    except PermissionError:
        out["error"] = f"this user may not use Docker's socket {sock}"
    except (OSError, ValueError, http.client.HTTPException) as exc:
        out["error"] = f"Docker is not answering on {sock} ({exc})"
    finally:
        conn.close()
    return out


def _docker_call(
    sock: str, method: str, path: str, body: dict[str, Any] | None = None, limit: int = 64 << 20
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to Docker's socket."""
    conn = module_utils("docker_service")._UnixHTTPConnection(sock, 30.0)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        payload = resp.read(limit) if method != "HEAD" else b""
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def _spec_lib_dirs() -> list[str]:
    """Where the CDI spec on disk mounts libcuda.so.1 in containers (else where the generator would)."""
    cdi = module_utils("cdi")
    dirs: list[str] = []
    try:
        with open(str(cdi.DEFAULT_PATH), "rb") as fh:
            spec = json.loads(fh.read(16 << 20).decode("utf-8"))
        for mount in (spec.get("containerEdits") or {}).get("mounts") or []:
            target = str(mount.get("containerPath") or "")
            if target.endswith("/libcuda.so.1") and os.path.dirname(target) not in dirs:
                dirs.append(os.path.dirname(target))
    except (OSError, ValueError, AttributeError):
        pass
    return dirs or list(cdi.container_lib_dirs_for(os.uname().machine))


def gather_image_libcuda(sock: str, image: dict[str, Any]) -> dict[str, Any]:
    """The libcuda.so.1 an image's loader takes before the CDI spec's mounts, read without running the image:
    {path, version, via, lib_dirs, error}.

    A container is created (never started), each LD_LIBRARY_PATH directory's libcuda.so.1 is looked up
    (HEAD /containers/ID/archive: its stat header, with a symlink's resolved target) and /etc/ld.so.cache
    copied out (GET /containers/ID/archive, a tar stream), then the container is removed.
    """
    import base64
    import io
    import tarfile

    cdi = module_utils("cdi")
    lib_dirs = _spec_lib_dirs()
    out: dict[str, Any] = {"path": None, "version": None, "via": None, "lib_dirs": lib_dirs, "error": None}
    same = cdi._same_dirs(lib_dirs)

    def stat(cid: str, path: str) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"path": path})
        status, headers, _ = _docker_call(sock, "HEAD", f"/containers/{cid}/archive?{query}")
        if status != 200:
            return None
        try:
            return dict(json.loads(base64.b64decode(headers.get("x-docker-container-path-stat", ""))))
        except (ValueError, TypeError):
            return {}

    def version_of(path: str, info: dict[str, Any]) -> str | None:
        return cdi.libcuda_version(str(info.get("linkTarget") or "")) or cdi.libcuda_version(path)

    cid = None
    try:
        status, _, body = _docker_call(
            sock,
            "POST",
            "/containers/create",
            {"Image": image.get("id") or image.get("name"), "Cmd": ["true"], "NetworkDisabled": True},
        )
        if status != 201:
            out["error"] = f"Docker answered HTTP {status} to creating a container of it"
            return out
        cid = str(json.loads(body.decode("utf-8", "replace"))["Id"])
        env_path = doctor_checks.image_env(image.get("env") or [], "LD_LIBRARY_PATH") or ""
        for directory in [d.rstrip("/") for d in env_path.split(":") if d.startswith("/")]:
            if directory in same:
                break  # the spec's own directory comes first: the host's libcuda wins
            info = stat(cid, f"{directory}/libcuda.so.1")
            if info is not None:
                path = f"{directory}/libcuda.so.1"
                out.update(path=path, version=version_of(path, info), via="LD_LIBRARY_PATH")
                return out
        status, _, body = _docker_call(sock, "GET", f"/containers/{cid}/archive?path=/etc/ld.so.cache")
        if status != 200:
            return out  # no linker cache: the loader goes to its default directories, where the spec mounts
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            handle = tar.extractfile(member) if member is not None else None
            cache = handle.read() if handle is not None else b""
        path = cdi.image_libcuda(cache, os.uname().machine, lib_dirs)
        if path:
            info = stat(cid, path) or {}
            out.update(path=path, version=version_of(path, info), via="ld.so.cache")
    except PermissionError:
        out["error"] = f"this user may not use Docker's socket {sock}"
    except (OSError, ValueError, KeyError, tarfile.TarError, http.client.HTTPException) as exc:
        out["error"] = f"Docker did not give the image's files ({exc})"
    finally:
        if cid:
            try:
                _docker_call(sock, "DELETE", f"/containers/{cid}?force=true&v=true")
            except (OSError, http.client.HTTPException):
                pass
    return out


def gather_module(facts: dict[str, Any]) -> dict[str, Any]:
    """The NVIDIA module's signature state (read only where Secure Boot is on): taint, filename, signer."""
    if not facts.get("secure_boot"):
        return {}
    out: dict[str, Any] = {"taint": None, "filename": None, "signer": None, "error": None}
    try:
        with open(NVIDIA_TAINT, encoding="ascii", errors="replace") as fh:
            out["taint"] = fh.read().strip()
    except OSError:
        pass
    try:
        proc = subprocess.run(["modinfo", "nvidia"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["error"] = f"modinfo could not run ({exc})"
        return out
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["modinfo found no nvidia module"])[-1]
        return out
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("filename", "signer", "sig_key") and not out.get(key.strip()):
            out[key.strip()] = value.strip() or None
    return out


def gather_cdi(settings: dict[str, Any]) -> dict[str, Any]:
    """The CDI spec's state in CDI mode: {path, exists, error, problems, stale}; empty in runtime mode."""
    if (settings.get("nvidia_container_mode") or "runtime") != "cdi":
        return {}
    cdi = module_utils("cdi")
    path = str(cdi.DEFAULT_PATH)
    state: dict[str, Any] = {"path": path, "exists": False, "error": None, "problems": [], "stale": []}
    try:
        with open(path, "rb") as fh:
            data = fh.read(16 << 20)
    except FileNotFoundError:
        return state
    except OSError as exc:
        state.update(exists=True, error=f"cannot be read ({exc.strerror or exc})")
        return state
    state["exists"] = True
    try:
        spec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        state["error"] = f"is not valid JSON ({exc})"
        return state
    state["problems"] = list(cdi.validate(spec))
    state["stale"] = list(cdi.stale_paths(spec))
    return state


def gather(args: argparse.Namespace) -> dict[str, Any]:
    from .. import nvml, settings

    values, source = settings.load(args.config)
    facts = module_utils("gpu_detect").detect(None)
    sock = docker_socket()
    inputs: dict[str, Any] = {
        "facts": facts,
        "nvml": nvml.snapshot(),
        "kernels": module_utils("driver").kernels_status(),
        "module": gather_module(facts),
        "docker": gather_docker(sock),
        "settings": values,
        "settings_file": source,
        "cdi": gather_cdi(values),
        "hooks": doctor_paths.gather_hooks(),
        "image": None,
    }
    inputs["engines"] = doctor_paths.gather_engines(facts, values)  # containerd's and Podman's checks
    image = getattr(args, "image", None)
    if image:
        inputs["image"] = gather_image(sock, image)
        if inputs["cdi"] and inputs["image"].get("found"):  # CDI mode: the spec's mounts against the image's own
            inputs["image"]["libcuda"] = gather_image_libcuda(sock, inputs["image"])
    return inputs


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
def print_checks(checks: list[dict[str, Any]]) -> None:
    from rich.markup import escape

    from ..output import console

    con = console()
    width = max(len(c["id"]) for c in checks)
    for c in checks:
        con.print(f"{MARKS[c['status']]}  {c['id'].ljust(width)}  {escape(c['message'])}")
        for line in c.get("details") or []:
            con.print(f"      {' ' * width}    {escape(line)}")
    fixes = [c for c in checks if c["status"] in ("fail", "warn") and c.get("fix")]
    if fixes:
        con.print("\nFixes:")
        for c in fixes:
            con.print(f"  {MARKS[c['status']]} {c['id']}: {escape(c['fix'])}")
    hints = [c for c in checks if c["status"] == "info" and c.get("fix")]
    if hints:
        con.print("\nHints:")
        for c in hints:
            con.print(f"  {c['id']}: {escape(c['fix'])}")
    failed = [c["id"] for c in checks if c["status"] == "fail"]
    con.print()
    if failed:
        con.print(f"[red]{len(failed)} check(s) failed[/red]: {', '.join(failed)}")
    else:
        con.print("[green]healthy[/green]: every check passed (warnings and notes do not fail).")


def run(args: argparse.Namespace) -> int:
    inputs = gather(args)
    checks = doctor_checks.run_checks(inputs)
    ok = doctor_checks.healthy(checks)
    if args.json:
        result: dict[str, Any] = {"healthy": ok, "checks": checks, "facts": inputs["facts"], "nvml": inputs["nvml"]}
        result["kernels"] = inputs["kernels"]
        if inputs["image"] is not None:
            result["image"] = inputs["image"]
        emit_json(result)
    else:
        print_checks(checks)
    return doctor_checks.exit_code(checks, inputs["facts"])

# Copyright: gpu-install contributors
# Apache License 2.0
"""Taking back what gpu-install did to a host: the plan, and the steps that are not an engine's.

The plan is a list of items, one per thing taken back, in one shape everywhere (the module, the CLI, the
fleet report, the tests)::

    {"kind": "file"|"setting"|"package"|"unit"|"key"|"repository"|"hold"|"state"|"driver",
     "target": path | package | unit | "PATH KEY", "action": "remove"|"purge"|"restore"|"edit"|"disable"|
     "unmask"|"uninstall"|"rebuild"|"restart"|"reload"|"move", "detail": str}

Everything it lists is found on the host, never assumed: a file only when it exists and says it is
gpu-install's (its marker, its gpu-install- name, or gpu-install's record of it), a package only when the
package record names it (module_utils/pkgrecord.py) and it is installed. So a second removal, and a host
gpu-install never touched, plan nothing.

The engines' files are their modules' (daemon_json, containerd): the plan lists their items, the remove
playbook runs those modules with state=absent. ``take_back`` does the rest, in an order that a removal killed
at any point can resume: units stop first, then packages go, then files, and gpu-install's state directory
(its records) last, so that the next run still knows what is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import (
    container_mode,
    daemon_json,
    docker_service,
    driver,
    errors,
    fileio,
    persistenced,
    pkgmgr,
    pkgrecord,
    repos,
)

STATE_DIR = "/var/lib/gpu-install"
# Where a file gpu-install wrote and the user edited afterwards is kept before it goes, and where gpu-install's
# dated backups (*.gpu-install.bak beside daemon.json and config.toml) move to: outside /etc, never deleted.
BACKUP_ROOT = "/var/backups/gpu-install"
# What the end of every apply records of the files below: path -> sha256, to tell a user's edit afterwards.
FILES_RECORD = "files.json"
UNIT_DIR = "/etc/systemd/system"
UDEV_RULE = "/etc/udev/rules.d/71-nvidia-dev-char.rules"
TOOLKIT_UNITS = ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service")
# NVIDIA's container toolkit packages (NVIDIA's packaging: nvidia-container-toolkit's debian/control and rpm spec;
# the nvidia_container role's __nvidia_container_toolkit_packages).
TOOLKIT_PACKAGES = pkgrecord.TOOLKIT_PACKAGES
# Directories gpu-install may have created for its files; each goes when empty and no package owns it.
# Children before parents.
CREATED_DIRS = (
    "/etc/udev/rules.d",
    "/etc/udev",
    "/etc/cdi",
    "/etc/apt/keyrings",
    os.path.dirname(persistenced.DROPIN),
    "/etc/nvidia-container-runtime",
)
# Written by nvidia-container-toolkit-base's postinst (`nvidia-ctk config --in-place`), and left behind by its purge
# (NVIDIA's packaging/debian/nvidia-container-toolkit-base.postinst; no postrm removes it): it goes with the package.
TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"


class RemovalError(errors.Failure):
    """A removal that cannot go on; carries the exit class."""


Item = Dict[str, str]
Runner = Callable[[Sequence[str]], Tuple[int, str, str]]


def item(kind: str, target: str, action: str, detail: str = "") -> Item:
    return {"kind": kind, "target": target, "action": action, "detail": detail}


def key(entry: Item) -> Tuple[str, str, str]:
    """What identifies an item (its detail may differ between the plan and a later look)."""
    return (str(entry.get("kind")), str(entry.get("target")), str(entry.get("action")))


def line(entry: Item) -> str:
    """How an item reads in a plan or a summary."""
    text = f"{entry['action']} {entry['kind']} {entry['target']}"
    return f"{text} ({entry['detail']})" if entry.get("detail") else text


def _run(argv: Sequence[str]) -> Tuple[int, str, str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _ours(path: str) -> bool:
    return fileio.marked(fileio.read_text(path))


def sha256(path: str) -> Optional[str]:
    data = _read(path)
    return hashlib.sha256(data).hexdigest() if data is not None else None


# ---------------------------------------------------------------------------
# What gpu-install's files are
# ---------------------------------------------------------------------------
class Owned(NamedTuple):
    """A whole file gpu-install writes: where, its item kind, and how to tell it is gpu-install's."""

    path: str
    kind: str
    detail: str
    marked: bool  # True: only when it carries gpu-install's marker (its name alone could be someone else's)


def owned_files(manager: str) -> List[Owned]:
    """Every whole file an apply can write (the driver's apart: driver.removal_items lists those)."""
    out = [
        Owned(UDEV_RULE, "file", "the /dev/char links rule (runtime mode)", True),
        Owned(container_mode.OWN_SPEC, "file", "gpu-install's CDI spec (cdi mode)", False),
        Owned(container_mode.UNIT_PATH, "unit", "regenerates the CDI spec at boot", True),
        Owned(persistenced.DROPIN, "file", "runs nvidia-persistenced in persistence mode", True),
        Owned(persistenced.WRITTEN_UNIT, "unit", "nvidia-persistenced's unit gpu-install wrote", True),
    ]
    family = _family(manager)
    for repo_id in repos.REPO_IDS:
        out.append(Owned(repos.source_path(repo_id, family), "repository", repo_id, False))
        out.append(Owned(repos.keyring_path(repo_id, family), "key", repo_id, False))
    if manager == "apt":
        out.append(Owned(repos.APT_PROXY_PATH, "file", "gpu_install_proxy for the vendors' repositories", False))
    return out


def record_files(manager: str, state_dir: str = STATE_DIR) -> None:
    """Remember the content of every gpu-install file that exists now (the end of a successful apply)."""
    found = {o.path: sha256(o.path) for o in owned_files(manager) if os.path.isfile(o.path)}
    found.update({p: sha256(p) for p in (driver.BLACKLIST_PATH,) if os.path.isfile(p)})
    path = os.path.join(state_dir, FILES_RECORD)
    data = {"schema": 1, "files": {k: v for k, v in sorted(found.items()) if v}}
    old = _read(path)
    new = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    if old != new:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        fileio.write_atomic(path, new, 0o644, 0, 0)


def _recorded_files(state_dir: str) -> Dict[str, str]:
    try:
        data = json.loads(_read(os.path.join(state_dir, FILES_RECORD)) or b"{}")
        files = data.get("files") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except ValueError:
        return {}


# ---------------------------------------------------------------------------
# Probes of the host
# ---------------------------------------------------------------------------
def docker_installed(installed: Dict[str, str]) -> List[str]:
    return sorted(n for n in installed if n in pkgrecord.DOCKER_PACKAGES)


def nvidia_containers(runtime_name: str, run: Runner = _run) -> List[Dict[str, str]]:
    """Docker's running containers whose runtime is NVIDIA's (its shim calls the runtime to stop them)."""
    if shutil.which("docker") is None:
        return []
    rc, out, _ = run(["docker", "ps", "-q", "--no-trunc"])
    ids = out.split() if rc == 0 else []
    if not ids:
        return []
    fmt = "{{.Id}}\t{{.Name}}\t{{.Config.Image}}\t{{.HostConfig.Runtime}}"
    rc, out, _ = run(["docker", "inspect", "--format", fmt, *ids])
    found = []
    for row in out.splitlines() if rc == 0 else []:
        parts = row.split("\t")
        if len(parts) == 4 and parts[3] == runtime_name:
            found.append({"id": parts[0][:12], "name": parts[1].lstrip("/"), "image": parts[2], "runtime": parts[3]})
    return found


def refusal(containers: Sequence[Dict[str, str]]) -> str:
    names = ", ".join(f"{c['name']} ({c['id']}, {c['image']})" for c in containers)
    return (
        f"{len(containers)} container(s) run under NVIDIA's runtime, which Docker needs to stop them: {names}; "
        "stop them first (docker stop NAME), then run remove again."
    )


def _unit_masked(name: str) -> bool:
    path = os.path.join(UNIT_DIR, name)
    return os.path.islink(path) and os.readlink(path) == "/dev/null"


def _enabled_links(name: str) -> List[str]:
    """The .wants/.requires links of a unit in /etc/systemd/system."""
    found = []
    try:
        dirs = [d for d in os.listdir(UNIT_DIR) if d.endswith((".wants", ".requires"))]
    except OSError:
        return []
    for d in dirs:
        link = os.path.join(UNIT_DIR, d, name)
        if os.path.islink(link):
            found.append(link)
    return found


def _container_record(state_dir: str) -> Dict[str, Any]:
    return container_mode.parse_record(fileio.read_text(os.path.join(state_dir, container_mode.RECORD_NAME)))


def _backups_beside(paths: Sequence[str]) -> List[str]:
    """gpu-install's dated backups (NAME.<stamp>.gpu-install.bak) beside the files it edits."""
    found = []
    for path in paths:
        directory, base = os.path.split(os.path.realpath(path))
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found += [
            os.path.join(directory, n)
            for n in sorted(names)
            if n.startswith(base + ".") and n.endswith(daemon_json.BACKUP_SUFFIX)
        ]
    return found


def _package_owns(path: str, manager: str, run: Runner) -> bool:
    argv = ["dpkg-query", "-S", path] if manager == "apt" else ["rpm", "-qf", path]
    rc, _, _ = run(argv)
    return rc == 0


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------
class Options(NamedTuple):
    driver: bool = False
    runtime_name: str = "nvidia"
    docker_config_path: str = "/etc/docker/daemon.json"
    containerd_config_path: str = "/etc/containerd/config.toml"
    containerd_drop_in: str = "/etc/containerd/conf.d/99-gpu-install.toml"
    state_dir: str = STATE_DIR


def _daemon_json_plan(opts: Options) -> daemon_json.Plan:
    """daemon.json as the removal leaves it (daemon_json's own plan of state=absent); a malformed file refuses."""
    try:
        options = daemon_json.Options(runtime_name=opts.runtime_name, state="absent")
        return daemon_json.plan(opts.docker_config_path, options, opts.state_dir)
    except daemon_json.DaemonJsonError as exc:
        raise RemovalError(exc.code, exc.reason) from None


def _daemon_json_items(p: daemon_json.Plan) -> Tuple[List[Item], bool]:
    """daemon.json's keys gpu-install set, and whether dockerd needs a restart (else a reload) for them."""
    if not p.changed:
        return [], False
    target = p.path
    # Keys that go entirely are reloaded through reload_keys (docker_service), so only a key a reload cannot
    # apply (features) restarts dockerd.
    restart = any(k not in daemon_json.RELOADABLE for k in daemon_json.changed_keys(p.before, p.after))
    if p.exists and not p.after_text:
        return [item("file", target, "remove", "gpu-install created it; nothing else is in it")], restart
    out = [
        item("setting", f"{target} {key}", "remove" if value is None else "restore",
             "" if value is None else f"back to {json.dumps(value)}")
        for key, value in _changes(p.before, p.after)
    ]  # fmt: skip
    return out, restart


def _changes(before: Any, after: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """(key path, value after or None when it goes) of what differs, down into objects present on both sides."""
    out: List[Tuple[str, Any]] = []
    for key in daemon_json.changed_keys(before, after):
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(before.get(key), dict) and isinstance(after.get(key), dict):
            out += _changes(before[key], after[key], path)
        else:
            out.append((path, daemon_json.to_plain(after[key]) if key in after else None))
    return out


# dockerd's values for the keys gpu-install sets when daemon.json leaves them out (dockerd reference:
# --default-runtime "runc"; no runtimes besides the built-in ones), said explicitly for the removal's reload.
DOCKERD_DEFAULTS: Dict[str, Any] = {"default-runtime": "runc", "runtimes": {}}


def reload_keys(after: Dict[str, Any]) -> Dict[str, Any]:
    """What daemon.json must say for the removal's reload: its own values of those keys (``after``: daemon.json as
    the removal leaves it), else dockerd's defaults."""
    return {k: daemon_json.to_plain(after.get(k, v)) for k, v in DOCKERD_DEFAULTS.items()}


def _dockerd_answers() -> bool:
    return bool(docker_service.docker_info())


def _dockerd_live(runtime_name: str) -> bool:
    """Whether the running dockerd still has NVIDIA's runtime (a removal killed before its reload)."""
    info = docker_service.docker_info()
    if not info:
        return False
    return runtime_name in (info.get("Runtimes") or {}) or info.get("DefaultRuntime") == runtime_name


def plan(opts: Options, manager: str, run: Runner = _run) -> Dict[str, Any]:
    """Everything gpu-install would take back from this host, what stays and why, and what blocks it.

    In the order the removal goes: the engines' configuration (their modules), then units, packages, files,
    holds, and gpu-install's records last.
    """
    installed = pkgmgr.installed_versions()
    dockers = docker_installed(installed)
    remove, kept = pkgrecord.removal_set(["container", "driver"] if opts.driver else ["container"], manager,
                                         state_dir=opts.state_dir)  # fmt: skip
    dj = _daemon_json_plan(opts)
    engine_items, restart = _engine_items(opts, dj, kept)
    toolkit_goes = bool(set(remove) & set(TOOLKIT_PACKAGES))
    items = engine_items + _unit_items(opts, toolkit_goes)
    items += [item("package", name, "purge", f"version {remove[name]}") for name in sorted(remove)]
    groups = pkgrecord.recorded(opts.state_dir, manager)
    driver_packages = sorted(n for n in remove if groups.get(n, {}).get("group") == "driver")
    if "nvidia-persistenced" in remove and _user_exists(PERSISTENCED_USER):
        kept.append({"target": f"the {PERSISTENCED_USER} account", "why": PERSISTENCED_USER_WHY})
    if toolkit_goes and os.path.exists(container_mode.TOOLKIT_SPEC):
        items.append(item("file", container_mode.TOOLKIT_SPEC, "remove", "the toolkit's CDI spec"))
    if "nvidia-container-toolkit-base" in remove and os.path.isfile(TOOLKIT_CONFIG):
        detail = f"the toolkit's postinst wrote it and its purge leaves it; backed up to {BACKUP_ROOT}"
        items.append(item("file", TOOLKIT_CONFIG, "remove", detail))
    items += _file_items(opts, manager, bool(dockers), kept)
    driver_items = driver.removal_items(driver.removal_probes(manager))
    items += [e for e in driver_items if opts.driver or e["kind"] == "hold"]
    items += [
        item("file", backup, "move", f"gpu-install's backup, kept in {BACKUP_ROOT}")
        for backup in _backups_beside([opts.docker_config_path, opts.containerd_config_path])
    ]
    stays = state_kept(opts, installed, manager)
    kept += [{"target": path, "why": "the driver's record, for remove --driver"} for path in stays]
    if os.path.isdir(opts.state_dir) and set(_entries(opts.state_dir)) - set(stays):
        items.append(item("state", opts.state_dir, "remove", "gpu-install's records and receipt"))
    if dockers:
        kept.append({"target": ", ".join(dockers), "why": "Docker stays, with its containers and images"})
    if not opts.driver and _driver_installed(installed):
        kept.append({"target": "the NVIDIA driver", "why": "remove --driver takes it back"})
    containers = nvidia_containers(opts.runtime_name, run) if toolkit_goes or engine_items else []
    return {"items": _unique(items), "kept": kept, "blocking_containers": containers,
            "restart_needed": ["docker"] if restart else [], "dockerd_reload_keys": reload_keys(dj.after),
            "driver_packages": driver_packages}  # fmt: skip


def _engine_items(opts: Options, dj: daemon_json.Plan, kept: List[Dict[str, str]]) -> Tuple[List[Item], bool]:
    """daemon.json's and containerd's items, and whether dockerd must restart (else reload) for them."""
    items, restart = _daemon_json_items(dj)
    if (items and _dockerd_answers()) or _dockerd_live_without_file(opts.runtime_name, dj.after):
        detail = "running containers stop" if restart else "SIGHUP: running containers keep running"
        items.append(item("setting", "dockerd", "restart" if restart else "reload", detail))
    containerd_items, containerd_kept = _containerd_plan(opts)
    kept += containerd_kept
    return items + containerd_items, restart


def _unit_items(opts: Options, toolkit_goes: bool) -> List[Item]:
    """Units gpu-install wrote or enabled (disabled, their files go later), and the toolkit's it masked."""
    out = [
        item("unit", os.path.basename(o.path), "disable", o.detail)
        for o in owned_files("")
        if o.kind == "unit" and os.path.isfile(o.path) and _ours(o.path)
    ]
    if _container_record(opts.state_dir).get("mode") == "cdi":
        out += [item("unit", u, "unmask", "cdi mode masked it") for u in TOOLKIT_UNITS if _unit_masked(u)]
    if toolkit_goes:
        out += [item("unit", u, "disable", "before its package goes") for u in TOOLKIT_UNITS if _enabled_links(u)]
    return out


def _file_items(opts: Options, manager: str, docker_stays: bool, kept: List[Dict[str, str]]) -> List[Item]:
    """gpu-install's whole files that exist; Docker's repository (and the proxy lines for it) stay with Docker."""
    recorded = _recorded_files(opts.state_dir)
    docker_repo = os.path.exists(repos.source_path("docker", _family(manager)))
    out = []
    for owned in owned_files(manager):
        if not os.path.lexists(owned.path) or (owned.marked and not _ours(owned.path)):
            continue
        if docker_stays and (owned.detail == "docker" or (owned.path == repos.APT_PROXY_PATH and docker_repo)):
            kept.append({"target": owned.path, "why": "it serves Docker's repository, which stays while Docker does"})
            continue
        kind = "file" if owned.kind == "unit" else owned.kind
        out.append(item(kind, owned.path, "remove", _edited(owned.path, recorded, owned.detail)))
    return out


# Debian's nvidia-persistenced creates this system account (its unit runs `nvidia-persistenced --user nvpd`) and
# leaves it when purged, as seen on bookworm (tests/integration/test_driver_apply.py, DRIVER_ACCOUNT).
PERSISTENCED_USER = "nvpd"
PERSISTENCED_USER_WHY = "nvidia-persistenced's package made it and leaves it on purge, as Debian's packages do"


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _entries(directory: str) -> List[str]:
    try:
        return [os.path.join(directory, n) for n in os.listdir(directory)]
    except OSError:
        return []


def state_kept(opts: Options, installed: Dict[str, str], manager: str) -> List[str]:
    """gpu-install's records that stay while the driver does (a later remove --driver needs them): the package
    record while it names installed driver packages, and the record of the runfile gpu-install ran."""
    if opts.driver:
        return []
    out = []
    packages = pkgrecord.recorded(opts.state_dir, manager)
    if any(i.get("group") == "driver" and n in installed for n, i in packages.items()):
        out.append(pkgrecord.record_path(opts.state_dir))
    runfile = os.path.join(opts.state_dir, os.path.basename(driver.RUNFILE_STATE))
    if os.path.isfile(runfile):
        out.append(runfile)
    return out


def _unique(items: List[Item]) -> List[Item]:
    seen, out = set(), []
    for entry in items:
        if key(entry) not in seen:
            seen.add(key(entry))
            out.append(entry)
    return out


def _family(manager: str) -> str:
    return "debian" if manager == "apt" else "redhat"


def _dockerd_live_without_file(runtime_name: str, after: Dict[str, Any]) -> bool:
    """dockerd still runs with NVIDIA's runtime that daemon.json (``after``) no longer names (a removal killed
    before its reload): the reload is still to do."""
    named = runtime_name in (after.get("runtimes") or {}) or after.get("default-runtime") == runtime_name
    return not named and _dockerd_live(runtime_name)


def _containerd_plan(opts: Options) -> Tuple[List[Item], List[Dict[str, str]]]:
    """containerd's drop-in, the imports line and its restart (the containerd_config module takes them back)."""
    from ansible_collections.gpu_install.nvidia.plugins.module_utils import containerd

    items, kept = containerd.removal_plan(opts.containerd_config_path, opts.containerd_drop_in, opts.state_dir)
    return list(items), list(kept)


def _edited(path: str, recorded: Dict[str, str], detail: str) -> str:
    digest = recorded.get(path)
    if digest is not None and digest == sha256(path):
        return detail
    why = "edited after apply" if digest is not None else "not in gpu-install's record of its files"
    return f"{detail}; {why}: backed up to {BACKUP_ROOT}" if detail else f"{why}: backed up to {BACKUP_ROOT}"


DRIVER_MARKS = ("nvidia-driver", "nvidia-kernel", "cuda-drivers", "nvidia-open", "libnvidia-compute")


def _driver_installed(installed: Dict[str, str]) -> bool:
    return any(n.startswith(DRIVER_MARKS) for n in installed) or os.path.exists(driver.RUNFILE_STATE)


# ---------------------------------------------------------------------------
# Taking back
# ---------------------------------------------------------------------------
def _backup_into(path: str, stamp: str) -> str:
    dest = os.path.join(BACKUP_ROOT, stamp, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    shutil.copy2(path, dest, follow_symlinks=False)
    return dest


def _systemctl(*args: str, run: Runner = _run) -> None:
    if os.path.isdir("/run/systemd/system"):
        run(["systemctl", *args])


def _remove_file(path: str, entry: Item, stamp: str) -> None:
    if BACKUP_ROOT in entry.get("detail", "") and os.path.isfile(path) and not os.path.islink(path):
        _backup_into(path, stamp)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def take_back(
    planned: Sequence[Item],
    manager: str,
    lock_timeout: int,
    state_dir: str = STATE_DIR,
    keep: Sequence[str] = (),
    run: Runner = _run,
) -> List[Item]:
    """Take back the plan's units, packages, files, holds and state (not the engines' items, nor the driver's
    uninstall and initramfs, which are the playbook's); ``keep``: state files a later step of the playbook
    still needs. Returns what was done."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    done: List[Item] = []
    units_changed = False
    for entry in planned:
        if entry["kind"] == "unit" and entry["action"] == "disable":
            _systemctl("disable", "--now", entry["target"], run=run)
            for link in _enabled_links(entry["target"]):
                os.unlink(link)
            units_changed = True
            done.append(entry)
        elif entry["kind"] == "unit" and entry["action"] == "unmask":
            link = os.path.join(UNIT_DIR, entry["target"])
            if os.path.islink(link):
                os.unlink(link)
            units_changed = True
            done.append(entry)
    # Before the packages: dnf's versionlock plugin may be one of them.
    locks = [e["target"].split(" ", 1)[1] for e in planned if e["target"].startswith(driver.VERSIONLOCK_LIST + " ")]
    if locks:
        rc, out, err = run([*driver.VERSIONLOCK_DELETE, *locks])
        if rc != 0:
            raise RemovalError(errors.INTERNAL, f"dnf versionlock delete failed: {(err or out).strip()[-300:]}")
    names = [e["target"] for e in planned if e["kind"] == "package"]
    if names:
        pkgrecord.remove(names, manager, lock_timeout, state_dir=state_dir)
        done += [e for e in planned if e["kind"] == "package"]
    for entry in planned:
        kind, target, action = entry["kind"], entry["target"], entry["action"]
        if kind == "hold" and target.startswith(driver.VERSIONLOCK_LIST + " "):
            done.append(entry)
        elif kind in ("file", "repository", "key", "hold") and action == "remove":
            _remove_file(target, entry, stamp)
            units_changed = units_changed or target.startswith(UNIT_DIR)
            done.append(entry)
        elif kind == "file" and action == "move":
            if os.path.exists(target):
                _backup_into(target, stamp)
                os.unlink(target)
            done.append(entry)
    for directory in CREATED_DIRS:
        try:
            if os.path.isdir(directory) and not os.listdir(directory) and not _package_owns(directory, manager, run):
                os.rmdir(directory)
        except OSError:
            pass
    if units_changed:
        _systemctl("daemon-reload", run=run)
    for entry in planned:
        if entry["kind"] == "state":
            _remove_state(entry["target"], keep)
            done.append(entry)
    return done


def _remove_state(path: str, keep: Sequence[str]) -> None:
    """A record file, or the state directory less ``keep`` (what the playbook's later steps still need)."""
    if path in keep:
        return
    if not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if full in keep:
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)
    if not os.listdir(path):
        os.rmdir(path)

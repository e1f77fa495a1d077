# Copyright: gpu-install contributors
# Apache License 2.0
"""The record of every package gpu-install installed, and the set that removal takes back (stdlib only).

``/var/lib/gpu-install/packages.json``::

    {"schema": 1,
     "packages": {"jq": {"version": "1.6-2.1", "group": "container"}, ...},
     "pending": [{"group": "container", "names": ["jq"], "before": ["adduser", ...]}]}

The packages module writes a pending entry (what was installed before) ahead of running apt-get or dnf, and
afterwards records what is installed now and was not before (the requested packages and the dependencies that
came with them), clearing the entry. A run killed in between leaves the entry, and whoever reads the record next
resolves it the same way. A package keeps the group it was first recorded with.

Groups: ``docker`` (Docker's install: never removed), ``container`` (NVIDIA's container toolkit: removed by
``gpu-install remove``), ``driver`` (the driver and what it needs: removed only with ``--driver``).

``removal_set`` takes the recorded packages of some groups that are still installed, minus every package that an
installed package outside the set depends on (Depends and Pre-Depends, or rpm's Requires, through virtual names
and alternatives, to a fixed point), and never Docker. ``remove`` purges exactly those: by argv, no autoremove,
refusing when the package manager would take anything else with them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import driver, errors, fileio, pkgmgr

STATE_DIR = "/var/lib/gpu-install"
RECORD = "packages.json"
SCHEMA = 1
GROUPS = ("docker", "container", "driver")

# NVIDIA's container toolkit, as its packaging names it (1.17 and newer split it in four): the source's
# packaging/debian/control and packaging/rpm/SPECS/nvidia-container-toolkit.spec (nvidia-container-toolkit,
# nvidia-container-toolkit-base; the toolkit depends on libnvidia-container-tools), and github.com/NVIDIA/
# libnvidia-container pkg/deb/control (libnvidia-container-tools, libnvidia-container1), read 2026-12-07.
# What remove takes for the group ``container`` on a host that has no record (applied before it existed).
TOOLKIT_PACKAGES: Tuple[str, ...] = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)

# Docker's packages, which removal never takes whatever group they were recorded under. Docker's install pages
# list its own (docker-ce, docker-ce-cli, containerd.io, docker-buildx-plugin, docker-compose-plugin,
# docker-ce-rootless-extras) and the distributions' packages that conflict with them: Debian and Ubuntu
# (docker.io, docker-doc, docker-compose, docker-compose-v2, podman-docker, containerd, runc;
# https://docs.docker.com/engine/install/debian/ and /ubuntu/), RHEL and Fedora (docker, docker-client,
# docker-client-latest, docker-common, docker-latest, docker-latest-logrotate, docker-logrotate, docker-engine,
# podman, runc; /engine/install/rhel/ and /fedora/, which also names moby-engine), read 2026-12-07. Debian 13
# splits the client into docker-cli (packages.debian.org/trixie/docker-cli).
DOCKER_PACKAGES: Tuple[str, ...] = (
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
    "docker-ce-rootless-extras",
    "docker.io",
    "docker-cli",
    "docker-doc",
    "docker-compose",
    "docker-compose-v2",
    "podman-docker",
    "containerd",
    "runc",
    "docker",
    "docker-client",
    "docker-client-latest",
    "docker-common",
    "docker-latest",
    "docker-latest-logrotate",
    "docker-logrotate",
    "docker-engine",
    "moby-engine",
    "moby-cli",
    "moby-containerd",
    "moby-runc",
    "podman",
)

DOCKER_WHY = "Docker's package: remove never takes Docker away"
UNRECORDED_WHY = "installed before gpu-install recorded packages: remove by hand"
NOT_RECORDED_WHY = "not in gpu-install's package record (installed by hand, or before the record): remove by hand"

# One query of every package dpkg knows: status, name, version, dependencies and what it provides.
DPKG_QUERY = "${db:Status-Abbrev}\t${Package}\t${Version}\t${Pre-Depends}\t${Depends}\t${Recommends}\t${Provides}\n"
# dpkg's second status letter: n not-installed and c config-files have no files; every other state has some.
_DPKG_GONE = ("n", "c")
# rpm's arrays joined by a vertical tab, which no dependency name holds (rich dependencies hold spaces).
RPM_QUERY = (
    "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t[%{PROVIDENAME}\\v]\\t[%{REQUIRENAME}\\v]\\t[%{RECOMMENDNAME}\\v]\\n"
)
_RICH_WORDS = {"and", "or", "if", "else", "with", "without", "unless"}


class Package:
    """An installed package: version, hard dependency clauses (each a list of alternatives), weak ones
    (Recommends), and the names it provides besides its own."""

    __slots__ = ("name", "version", "depends", "recommends", "provides")

    def __init__(
        self,
        name: str,
        version: str,
        depends: Optional[List[List[str]]] = None,
        recommends: Optional[List[List[str]]] = None,
        provides: Optional[List[str]] = None,
    ) -> None:
        self.name = name
        self.version = version
        self.depends = depends or []
        self.recommends = recommends or []
        self.provides = provides or []


Graph = Dict[str, Package]


# -- reading what is installed -------------------------------------------------
def _dpkg_names(field: str) -> List[str]:
    """'foo (>= 1), bar:any' -> ['foo', 'bar'] (a Provides field, or one clause's alternatives)."""
    names = []
    for part in field.split(","):
        name = part.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0].strip()
        if name:
            names.append(name)
    return names


def _dpkg_clauses(field: str) -> List[List[str]]:
    """'a (>= 1) | b, c:any' -> [['a', 'b'], ['c']]."""
    clauses = []
    for clause in field.split(","):
        alternatives = [n for alt in clause.split("|") for n in _dpkg_names(alt)]
        if alternatives:
            clauses.append(alternatives)
    return clauses


def parse_dpkg_query(text: str) -> Graph:
    """Installed packages from ``dpkg-query -W -f DPKG_QUERY`` (a package of several architectures merged)."""
    graph: Graph = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 7 or len(fields[0]) < 2 or fields[0][1] in _DPKG_GONE:
            continue
        _status, name, version, predepends, depends, recommends, provides = fields
        pkg = graph.get(name)
        if pkg is None:
            pkg = graph[name] = Package(name, version)
        pkg.depends += _dpkg_clauses(predepends) + _dpkg_clauses(depends)
        pkg.recommends += _dpkg_clauses(recommends)
        pkg.provides += _dpkg_names(provides)
    return graph


def _rpm_clauses(field: str) -> List[List[str]]:
    """rpm's REQUIRENAME array; a rich dependency '(a or (b with c))' counts as one clause of all its names.

    Reading ``and`` like ``or`` is safe here: removal keeps every name in the set that a clause could need.
    """
    clauses = []
    for raw in field.split("\v"):
        item = raw.strip()
        if not item or item.startswith("rpmlib("):
            continue
        if item.startswith("("):
            names = [w for w in re.findall(r"[^\s()]+", item) if w not in _RICH_WORDS and not _is_version(w)]
            if names:
                clauses.append(names)
        else:
            clauses.append([item])
    return clauses


def _is_version(word: str) -> bool:
    return word in ("<", ">", "=", "<=", ">=") or bool(re.match(r"^\d[\w.:~^+-]*$", word))


def parse_rpm_query(text: str) -> Graph:
    """Installed packages from ``rpm -qa --qf RPM_QUERY``."""
    graph: Graph = {}
    for line in text.split("\n"):  # not splitlines(): that splits at the vertical tabs too
        fields = line.split("\t")
        if len(fields) != 5:
            continue
        name, evr, provides, requires, recommends = fields
        version = evr[2:] if evr.startswith("0:") else evr
        pkg = graph.get(name)
        if pkg is None:
            pkg = graph[name] = Package(name, version)
        pkg.provides += [p for p in provides.split("\v") if p and p != name]
        pkg.depends += _rpm_clauses(requires)
        pkg.recommends += _rpm_clauses(recommends)
    return graph


def read_installed(manager: str, runner: pkgmgr.Runner = pkgmgr.run) -> Graph:
    """Every installed package with its dependencies, in one query of the package database (reads only)."""
    if manager == "dnf":
        rc, out, err = runner(["rpm", "-qa", "--qf", RPM_QUERY], {"LC_ALL": "C"})
        if rc != 0:
            raise pkgmgr.PackageError(errors.HOST_ERROR, f"rpm cannot list the installed packages: {err.strip()}")
        return parse_rpm_query(out)
    rc, out, err = runner(["dpkg-query", "-W", "-f", DPKG_QUERY], dict(pkgmgr.APT_ENV))
    if rc != 0:
        raise pkgmgr.PackageError(errors.HOST_ERROR, f"dpkg-query cannot list the installed packages: {err.strip()}")
    return parse_dpkg_query(out)


def _providers(graph: Graph) -> Dict[str, Set[str]]:
    """Each name (a package's own, or one it provides) -> the installed packages that give it."""
    found: Dict[str, Set[str]] = {}
    for name, pkg in graph.items():
        found.setdefault(name, set()).add(name)
        for provided in pkg.provides:
            found.setdefault(provided, set()).add(name)
    return found


def _file_providers(
    graph: Graph, candidates: Set[str], providers: Dict[str, Set[str]], runner: pkgmgr.Runner
) -> Dict[str, Set[str]]:
    """rpm's file dependencies ('/bin/sh') that a candidate could satisfy, with every installed owner of each.

    rpm lists a package's files, not as provides: the candidates' file lists are read (few packages), and only a
    file some candidate owns is looked up (``rpm -q --whatprovides``) for the other packages that give it.
    """
    wanted = {alt for pkg in graph.values() for clause in pkg.depends for alt in clause if alt.startswith("/")}
    wanted -= set(providers)
    if not wanted or not candidates:
        return {}
    rc, out, _err = runner(["rpm", "-ql", *sorted(candidates)], {"LC_ALL": "C"})
    owned = set(out.split()) & wanted if rc in (0, 1) else wanted
    files: Dict[str, Set[str]] = {}
    for path in sorted(owned):
        rc, out, _err = runner(["rpm", "-q", "--whatprovides", "--qf", "%{NAME}\\n", path], {"LC_ALL": "C"})
        owners = {line.strip() for line in out.splitlines() if line.strip() in graph} if rc == 0 else set()
        if owners:
            files[path] = owners
    return files


# -- the dependency fixed point -----------------------------------------------
def fixed_point(
    candidates: Iterable[str], graph: Graph, providers: Optional[Dict[str, Set[str]]] = None
) -> Tuple[Set[str], Dict[str, Set[str]]]:
    """(what can go, kept: name -> the installed packages outside the set that need it).

    A package outside the set whose dependency clause only packages of the set satisfy keeps those packages
    (every one of them that the clause names); a kept package is outside the set from then on, so what it needs
    stays too, until nothing changes.
    """
    providers = providers if providers is not None else _providers(graph)
    wanted = {name for name in candidates if name in graph}
    remove = set(wanted)
    kept: Dict[str, Set[str]] = {}
    changed = True
    while changed:
        changed = False
        for name, pkg in graph.items():
            if name in remove:
                continue
            for clause in pkg.depends:
                given: Set[str] = set()
                for alternative in clause:
                    given |= providers.get(alternative, set())
                given.discard(name)
                if not given or given - remove:
                    continue  # unsatisfied (rpmlib, a file) or satisfied by a package that stays
                remove -= given
                changed = True
    # Name every dependant of a kept package: each package that stays and has a clause only the set satisfies.
    for name, pkg in graph.items():
        if name in remove:
            continue
        for clause in pkg.depends:
            given = set().union(*(providers.get(alternative, set()) for alternative in clause)) - {name}
            if given and given <= wanted:
                for needed in given:
                    kept.setdefault(needed, set()).add(name)
    return remove, kept


def _kept_why(dependants: Set[str]) -> str:
    names = sorted(dependants)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{shown} {'depends' if len(names) == 1 else 'depend'} on it"


def _closure(roots: Iterable[str], graph: Graph, within: Set[str]) -> Set[str]:
    """The packages of ``within`` that ``roots`` bring, through dependencies and recommendations.

    Packages that were there before are followed too: an upgrade (of a root, or of a library with it) brings new
    packages through them. A package someone else installed meanwhile is new, but nothing of the roots needs it.
    """
    providers = _providers(graph)
    seen: Set[str] = set()
    todo = [r for r in roots if r in graph]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        pkg = graph[name]
        for clause in pkg.depends + pkg.recommends:
            for alternative in clause:
                todo.extend(p for p in providers.get(alternative, ()) if p not in seen)
    return seen & within


def _roots(specs: Sequence[str], graph: Graph) -> Optional[List[str]]:
    """The installed packages that requested specs name ('jq', 'jq=1.6-2.1', 'nvidia-open-570.1'), or None when
    one of them names none (then nothing narrows what the install brought)."""
    providers = _providers(graph)
    roots: List[str] = []
    for spec in specs:
        base = spec.split("=", 1)[0]
        if base in providers:
            roots.extend(providers[base])
            continue
        prefixes = [n for n in graph if spec.startswith(n + "-")]
        if not prefixes:
            return None
        roots.append(max(prefixes, key=len))
    return roots


def brought(entry: Dict[str, Any], graph: Graph) -> Set[str]:
    """What an install brought: installed now and not before it, and (when its requested names are known) what
    those names depend on or recommend, so that a package someone else installed meanwhile is not taken."""
    new = set(graph) - set(entry.get("before") or [])
    names = entry.get("names") or []
    roots = _roots(names, graph) if names else None
    return new if roots is None else _closure(roots, graph, new)


# -- the record file -------------------------------------------------------------
def record_path(state_dir: str = STATE_DIR) -> str:
    return os.path.join(state_dir, RECORD)


def load(state_dir: str = STATE_DIR) -> Optional[Dict[str, Any]]:
    """The record as written (pending entries unresolved), or None when there is none."""
    try:
        with open(record_path(state_dir), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise errors.Failure(
            errors.INVALID_INPUT,
            f"{record_path(state_dir)} is not gpu-install's package record ({exc}): move it aside, then run again.",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("packages", {}), dict):
        raise errors.Failure(
            errors.INVALID_INPUT,
            f"{record_path(state_dir)} is not gpu-install's package record: move it aside, then run again.",
        )
    data.setdefault("packages", {})
    data.setdefault("pending", [])
    return data


def resolve(data: Dict[str, Any], graph: Graph) -> Dict[str, Any]:
    """The record with its pending entries resolved against what is installed now (a new dict)."""
    packages = {name: dict(info) for name, info in data.get("packages", {}).items()}
    for entry in data.get("pending") or []:
        for name in sorted(brought(entry, graph)):
            packages.setdefault(name, {"version": graph[name].version, "group": entry.get("group", "")})
    return {"schema": SCHEMA, "packages": packages, "pending": []}


def _save(data: Dict[str, Any], state_dir: str) -> None:
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    fileio.write_atomic(record_path(state_dir), text.encode("utf-8"), mode=0o644)


@contextlib.contextmanager
def _locked(state_dir: str) -> Iterator[None]:
    """One writer at a time (read, change, write): a lock on the state directory itself, so no lock file is left."""
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _settled(graph: Graph, state_dir: str) -> Dict[str, Any]:
    """The record with pending entries resolved and packages no longer installed dropped."""
    data = resolve(load(state_dir) or {}, graph)
    data["packages"] = {n: info for n, info in data["packages"].items() if n in graph}
    return data


def begin(
    group: str, names: Sequence[str], manager: str, state_dir: str = STATE_DIR, runner: pkgmgr.Runner = pkgmgr.run
) -> Dict[str, Any]:
    """Before an install: write a pending entry naming what is installed now; returns the entry for ``finish``."""
    graph = read_installed(manager, runner)
    entry = {"group": group, "names": list(names), "before": sorted(graph)}
    with _locked(state_dir):
        data = _settled(graph, state_dir)
        data["pending"] = [entry]
        _save(data, state_dir)
    return entry


def finish(manager: str, state_dir: str = STATE_DIR, runner: pkgmgr.Runner = pkgmgr.run) -> List[str]:
    """After an install (succeeded or failed): record what it brought, clear the pending entry; returns the names
    recorded now."""
    graph = read_installed(manager, runner)
    with _locked(state_dir):
        before = set((load(state_dir) or {}).get("packages", {}))
        data = _settled(graph, state_dir)
        _save(data, state_dir)
    return sorted(set(data["packages"]) - before)


def settle_pending(manager: str, state_dir: str = STATE_DIR, runner: pkgmgr.Runner = pkgmgr.run) -> List[str]:
    """Resolve a pending entry a killed run left (a writer with nothing to install); returns the names recorded."""
    data = load(state_dir)
    return finish(manager, state_dir, runner) if data is not None and data.get("pending") else []


def forget(
    names: Iterable[str], manager: str, state_dir: str = STATE_DIR, runner: pkgmgr.Runner = pkgmgr.run
) -> List[str]:
    """After a removal: drop the packages that are gone from the record (no record: nothing to do)."""
    if load(state_dir) is None:
        return []
    graph = read_installed(manager, runner)
    with _locked(state_dir):
        before = set((load(state_dir) or {}).get("packages", {}))
        data = _settled(graph, state_dir)
        _save(data, state_dir)
    return sorted(n for n in set(names) & before if n not in data["packages"])


def recorded(
    state_dir: str = STATE_DIR, manager: Optional[str] = None, runner: pkgmgr.Runner = pkgmgr.run
) -> Dict[str, Dict[str, str]]:
    """name -> {"version", "group"}: the record, a pending entry resolved against what is installed now (read-only:
    the file is settled by the next writer). No record: empty."""
    data = load(state_dir)
    if data is None:
        return {}
    if data.get("pending"):
        data = resolve(data, read_installed(manager or default_manager(), runner))
    return {
        name: {"version": str(info.get("version", "")), "group": str(info.get("group", ""))}
        for name, info in data["packages"].items()
    }


def default_manager() -> str:
    """apt where dpkg is, else dnf (the record's readers need no facts)."""
    return "apt" if shutil.which("dpkg-query") else "dnf"


# -- what removal takes ---------------------------------------------------------
def _driver_packages(graph: Graph) -> List[str]:
    return sorted(n for n, p in graph.items() if driver.package_branch(n, p.version) is not None)


def _known(group: str, graph: Graph) -> List[str]:
    """The installed packages a group's install would have brought by name (the toolkit's; the driver's)."""
    if group == "container":
        return [n for n in TOOLKIT_PACKAGES if n in graph]
    if group == "driver":
        return _driver_packages(graph)
    return []


def removal_set(
    groups: Sequence[str],
    manager: str,
    state_dir: str = STATE_DIR,
    graph: Optional[Graph] = None,
    runner: pkgmgr.Runner = pkgmgr.run,
) -> Tuple[Dict[str, str], List[Dict[str, str]]]:
    """(name -> version to remove, kept: [{"target", "why"}]) for the recorded packages of ``groups``.

    Only installed packages; never Docker's; a package an installed package outside the set depends on stays,
    naming its dependants. No record: ``container`` falls back to the toolkit's package names, and each driver
    package found is named in kept, to be removed by hand.
    """
    graph = graph if graph is not None else read_installed(manager, runner)
    data = load(state_dir)
    kept: List[Dict[str, str]] = []
    candidates: Set[str] = set()
    if data is None:
        if "container" in groups:
            candidates |= set(_known("container", graph))
        if "driver" in groups:
            kept += [{"target": n, "why": UNRECORDED_WHY} for n in _driver_packages(graph)]
    else:
        resolved = resolve(data, graph)["packages"]
        for name, info in sorted(resolved.items()):
            if info.get("group") in groups and info.get("group") != "docker" and name in graph:
                candidates.add(name)
        for group in groups:
            for name in _known(group, graph):
                if name not in resolved:
                    kept.append({"target": name, "why": NOT_RECORDED_WHY})
    for name in sorted(candidates & set(DOCKER_PACKAGES)):
        kept.append({"target": name, "why": DOCKER_WHY})
    candidates -= set(DOCKER_PACKAGES)
    providers = _providers(graph)
    if manager == "dnf":
        for path, owners in _file_providers(graph, candidates, providers, runner).items():
            providers[path] = owners
    remove, needed = fixed_point(candidates, graph, providers)
    kept += [{"target": n, "why": _kept_why(needed[n])} for n in sorted(needed)]
    return {n: graph[n].version for n in sorted(remove)}, kept


# -- taking packages back -------------------------------------------------------
_APT_GONE_RE = re.compile(r"^(?:Purg|Remv) (\S+)")


def _refuse_others(names: Sequence[str], others: Sequence[str], why: str) -> pkgmgr.PackageError:
    return pkgmgr.PackageError(
        errors.INTERNAL,
        f"removing {', '.join(names)} would also remove {', '.join(others)} ({why}): nothing was removed; "
        "run gpu-install remove again to plan against the packages installed now.",
    )


def remove(
    names: Sequence[str],
    manager: str,
    lock_timeout: int,
    state_dir: str = STATE_DIR,
    runner: pkgmgr.Runner = pkgmgr.run,
) -> List[str]:
    """Purge exactly ``names`` (apt-get purge, dnf remove; no autoremove), after the package manager's lock is
    free; refuse before any change when it would take another package with them. Returns what was removed, and
    drops it from the record."""
    graph = read_installed(manager, runner)
    todo = sorted(n for n in set(names) if n in graph)
    if not todo:
        forget(names, manager, state_dir, runner)
        return []
    if manager == "dnf":
        pkgmgr.wait_for_lock(pkgmgr.RPM_LOCKS, lock_timeout)
        rc, out, err = runner(["rpm", "-e", "--test", *todo], {"LC_ALL": "C"})
        if rc != 0:
            needers = sorted(set(re.findall(r"is needed by \(installed\) (\S+)", out + err)))
            raise _refuse_others(todo, needers or [(err or out).strip()[-200:]], "they depend on them")
        argv = ["dnf", "remove", "-y", "-q", "--setopt=clean_requirements_on_remove=False", *todo]
        rc, out, err = runner(argv, {"LC_ALL": "C"})
    else:
        pkgmgr.wait_for_lock(pkgmgr.DPKG_LOCKS, lock_timeout)
        pkgmgr.recover_dpkg(runner)
        opts = ["-o", "APT::Get::AutomaticRemove=false", "-o", f"DPkg::Lock::Timeout={max(0, lock_timeout)}"]
        rc, out, err = runner(["apt-get", "purge", "-s", "-q", *opts, *todo], dict(pkgmgr.APT_ENV))
        if rc != 0:
            raise pkgmgr.PackageError(errors.INTERNAL, f"apt-get cannot remove {' '.join(todo)}: {err.strip()[-300:]}")
        others = sorted({m.group(1) for m in map(_APT_GONE_RE.match, out.splitlines()) if m} - set(todo))
        if others:
            raise _refuse_others(todo, others, "apt-get would take them along")
        installs = sorted(line.split()[1] for line in out.splitlines() if line.startswith("Inst "))
        if installs:
            raise pkgmgr.PackageError(
                errors.INTERNAL,
                f"removing {', '.join(todo)} would make apt-get install {', '.join(installs)}: nothing was removed; "
                "run gpu-install remove again to plan against the packages installed now.",
            )
        rc, out, err = runner(["apt-get", "purge", "-y", "-q", *opts, *todo], dict(pkgmgr.APT_ENV))
    if rc != 0:
        text = (err or out).strip().splitlines()
        raise pkgmgr.PackageError(
            errors.INTERNAL, f"{manager} failed removing {' '.join(todo)}: {text[-1] if text else rc}"
        )
    forget(todo, manager, state_dir, runner)
    after = read_installed(manager, runner)
    return [n for n in todo if n not in after]

# Copyright: gpu-install contributors
# Apache License 2.0
"""Which container engines gpu-install configures on a host (stdlib only).

The setting ``gpu_install_container_engines`` is ``auto`` or a list of engines (docker, containerd, podman).
One place decides, from the host's facts (gpu_detect), the list the roles act on:

* ``check(setting) -> "auto" | list``: the setting validated (exit 4 for an unknown engine or an empty list).
* ``resolve(setting, facts) -> list``: the engines to configure, in ``ENGINES`` order (exit 3 for a listed
  engine that the host lacks and gpu-install never installs).
* ``apply(facts, setting)``: ``resolve`` written into the facts as ``engines``; a podman-docker shim no
  longer refuses a host on which Docker is neither present nor wanted.
* ``summaries(facts)``: one line per engine found, for ``gpu-install detect``, plan, apply and the report.

docs/engines.md explains the rules and cites their sources.
"""

from __future__ import annotations

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Union

    Setting = Union[str, List[str]]

SETTING = "gpu_install_container_engines"
AUTO = "auto"
# Every engine gpu-install knows, in the order it configures and lists them.
ENGINES = ("docker", "containerd", "podman")
# Engines gpu-install installs when they are asked for and absent (docker, as it always did). containerd and
# Podman are the user's: a listed one that is absent is refused.
INSTALLED_WHEN_ABSENT = ("docker",)
# The role that configures each engine, and the one whose changes an engine relies on (Podman reads the CDI
# spec the nvidia_container role writes; it has no configuration of its own).
ROLE_OF = {"docker": "docker", "containerd": "containerd", "podman": "nvidia_container"}
# What to install for an engine that a list names and the host lacks.
PACKAGES_OF = {"containerd": "containerd (Debian, Ubuntu) or containerd.io (Docker's repository)", "podman": "podman"}
SHIM_PROBLEM = "podman_docker_shim"
SHIM_NOTE = " (a note only here: Docker is not among the engines configured)."


class EngineError(errors.Failure):
    """A refused setting: ``code`` 4 (invalid) or 3 (an engine the host lacks)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(setting: Any) -> Setting:
    """``"auto"`` or the listed engines (duplicates dropped, ``ENGINES`` order); EngineError(4) otherwise.

    A single engine name given as a string counts as a list of that one engine.
    """
    known = ", ".join(ENGINES)
    if isinstance(setting, str):
        if setting.strip().lower() == AUTO:
            return AUTO
        setting = [setting]
    if not isinstance(setting, (list, tuple)):
        raise EngineError(
            errors.INVALID_INPUT,
            f"{SETTING} must be auto or a list of engines ({known}), not {_short(setting)}.",
        )
    if not setting:
        raise EngineError(
            errors.INVALID_INPUT,
            f"{SETTING} is an empty list: name at least one engine ({known}), or set it to auto.",
        )
    names = [item.strip().lower() if isinstance(item, str) else item for item in setting]
    unknown = [item for item in names if item not in ENGINES]
    if unknown:
        raise EngineError(
            errors.INVALID_INPUT,
            f"{SETTING} names {', '.join(_short(u) for u in unknown)}, which gpu-install does not configure: "
            f"the engines are {known} (or auto).",
        )
    return [engine for engine in ENGINES if engine in names]


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def present(facts: Dict[str, Any]) -> List[str]:
    """The engines found on the host (a podman-docker shim is not Docker)."""
    found = []
    if _dict(facts.get("docker")).get("flavour"):
        found.append("docker")
    if _dict(facts.get("containerd")).get("present"):
        found.append("containerd")
    if _dict(facts.get("podman")).get("present"):
        found.append("podman")
    return found


def auto(facts: Dict[str, Any]) -> List[str]:
    """What ``auto`` takes: Docker when present; containerd when a kubelet uses it, or when its CRI plugin is
    on and no Docker is present (Docker's own containerd serves Docker); Podman when present; Docker (installed
    as before) when that leaves nothing."""
    docker = bool(_dict(facts.get("docker")).get("flavour"))
    containerd = _dict(facts.get("containerd"))
    taken = []
    if docker:
        taken.append("docker")
    if containerd.get("present") and (containerd.get("kubelet") or (containerd.get("cri_enabled") and not docker)):
        taken.append("containerd")
    if _dict(facts.get("podman")).get("present"):
        taken.append("podman")
    return taken or ["docker"]


def resolve(setting: Any, facts: Dict[str, Any]) -> List[str]:
    """The engines to configure for ``setting`` on the host of ``facts``; EngineError (4 or 3) when refused."""
    checked = check(setting)
    if checked == AUTO:
        return auto(facts)
    found = present(facts)
    missing = [engine for engine in checked if engine not in found and engine not in INSTALLED_WHEN_ABSENT]
    if missing:
        engine = missing[0]
        raise EngineError(
            errors.UNSUPPORTED,
            f"{SETTING} lists {engine}, which is not installed on this host and which gpu-install never installs: "
            f"install {PACKAGES_OF[engine]} first, or remove {engine} from the list.",
        )
    return list(checked)


def apply(facts: Dict[str, Any], setting: Any = AUTO) -> List[str]:
    """Resolve ``setting`` into ``facts["engines"]`` (EngineError when refused) and return the list.

    podman-docker without a Docker engine refuses a host only where Docker would be installed: where the
    engines are Podman (or containerd) alone, the shim stays a note.
    """
    engines = resolve(setting, facts)
    facts["engines"] = engines
    refuses = "docker" in engines
    changed = False
    for problem in facts.get("problems") or []:
        if not (isinstance(problem, dict) and problem.get("code") == SHIM_PROBLEM):
            continue
        message = str(problem.get("message") or "")
        if message.endswith(SHIM_NOTE):
            message = message[: -len(SHIM_NOTE)] + "."
        if not refuses:
            message = message.rstrip(".") + SHIM_NOTE
        changed = changed or problem.get("refuses") is not refuses
        problem.update(refuses=refuses, message=message)
    if changed and "supported" in facts:
        facts["supported"] = not any(isinstance(p, dict) and p.get("refuses") for p in facts.get("problems") or [])
    return engines


def summaries(facts: Dict[str, Any]) -> Dict[str, str]:
    """One line per engine found (and a kubelet), e.g. ``{"containerd": "containerd 1.7.24 (containerd), config
    version 2, CRI on, used by the kubelet"}``; engines not found are left out."""
    out: Dict[str, str] = {}
    docker = _dict(facts.get("docker"))
    if docker.get("flavour"):
        out["docker"] = f"{docker.get('flavour')} {docker.get('version') or '(version unknown)'}"
    containerd = _dict(facts.get("containerd"))
    if containerd.get("present"):
        parts = [f"containerd {containerd.get('version') or '(version unknown)'}"]
        if containerd.get("package"):
            parts[0] += f" ({containerd['package']})"
        if containerd.get("config_exists"):
            parts.append(f"config version {containerd.get('config_version')}")
        else:
            parts.append("no config.toml (defaults)")
        parts.append("CRI on" if containerd.get("cri_enabled") else "CRI off")
        if containerd.get("kubelet"):
            parts.append("used by the kubelet")
        if containerd.get("active") is not None:
            parts.append("running" if containerd.get("active") else "not running")
        out["containerd"] = ", ".join(parts)
    podman = _dict(facts.get("podman"))
    if podman.get("present"):
        cdi = "reads CDI specs" if podman.get("cdi") else "no CDI (needs Podman 4.1 or newer)"
        out["podman"] = f"podman {podman.get('version') or '(version unknown)'}, {cdi}"
    kubelet = _dict(facts.get("kubelet"))
    if kubelet.get("present"):
        where = kubelet.get("endpoint_source")
        source = "its default" if where == "default" else where
        out["kubelet"] = f"kubelet, runtime endpoint {kubelet.get('endpoint')} (from {source})"
    return out


def engines_line(facts: Dict[str, Any]) -> str:
    """``docker, containerd`` (the resolved engines), with ``docker (to install)`` where Docker is absent."""
    listed = facts.get("engines")
    engines = listed if isinstance(listed, list) else []
    found = present(facts)
    names = [f"{e} (to install)" if e in INSTALLED_WHEN_ABSENT and e not in found else str(e) for e in engines]
    return ", ".join(names) or "-"

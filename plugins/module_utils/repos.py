# Copyright: gpu-install contributors
# Apache License 2.0
"""The vendors' package repositories as data, rendered and verified (stdlib only).

* ``VENDORS`` / ``BASES`` / ``ARCHES``: for each repository id (``cuda``,
  ``nvidia_container_toolkit``, ``docker``) and each supported base, the
  vendor's base URL, the layout below it, the key path and the pinned key
  fingerprint. Nothing here is an ``if`` per distribution.
* ``resolve(repo_id, facts, overrides)`` applies ``gpu_install_repositories``
  (a mirror's url, key_url, fingerprint) and fails closed where no key is
  pinned.
* ``render_deb822`` / ``render_dnf``: the files gpu-install writes.
* ``preflight(...)``: fetch each key, check its fingerprint, then let the real
  apt (or dnf) fetch and verify the repository into a scratch directory, check
  that the packages resolve and that their files answer, all before anything
  on the host changes. The host's apt state is only read.

Every failure is a ``RepoError`` carrying the exit class (5: package source,
3: unsupported, 4: invalid settings) and one sentence naming the repository,
the URL and the fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, fileio, openpgp

REPO_IDS: Tuple[str, ...] = ("cuda", "nvidia_container_toolkit", "docker", "epel")
OVERRIDE_KEYS: Tuple[str, ...] = ("url", "key_url", "fingerprint")

APT_KEYRING_DIR = "/etc/apt/keyrings"
APT_SOURCES_DIR = "/etc/apt/sources.list.d"
APT_CONF_DIR = "/etc/apt/apt.conf.d"
RPM_KEY_DIR = "/etc/pki/rpm-gpg"
DNF_REPOS_DIR = "/etc/yum.repos.d"
FILE_PREFIX = "gpu-install-"
HEADER = "# Written by gpu-install ({name}); set gpu_install_repositories.{id} to change it.\n"

KEY_MAX_BYTES = 1 << 20
TIMEOUT = 30.0

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
# Supported bases, keyed by the facts' os.like (id, version_id): the vendors' spellings.
#   cuda: CUDA's directory; codename: the apt suite; releasever: dnf's $releasever.
BASES: Dict[Tuple[str, str], Dict[str, str]] = {
    ("ubuntu", "20.04"): {"family": "debian", "cuda": "ubuntu2004", "codename": "focal"},
    ("ubuntu", "22.04"): {"family": "debian", "cuda": "ubuntu2204", "codename": "jammy"},
    ("ubuntu", "24.04"): {"family": "debian", "cuda": "ubuntu2404", "codename": "noble"},
    ("debian", "11"): {"family": "debian", "cuda": "debian11", "codename": "bullseye"},
    ("debian", "12"): {"family": "debian", "cuda": "debian12", "codename": "bookworm"},
    ("debian", "13"): {"family": "debian", "cuda": "debian13", "codename": "trixie", "cuda_key": "8793F200.pub"},
    ("rhel", "8"): {"family": "redhat", "cuda": "rhel8", "releasever": "8"},
    ("rhel", "9"): {"family": "redhat", "cuda": "rhel9", "releasever": "9"},
    ("rhel", "10"): {"family": "redhat", "cuda": "rhel10", "releasever": "10", "cuda_key": "CDF6BA43.pub"},
    ("amzn", "2023"): {"family": "redhat", "cuda": "amzn2023", "releasever": "2023"},
}

# uname -m -> each vendor's spelling (CUDA calls aarch64 servers "sbsa").
ARCHES: Dict[str, Dict[str, str]] = {
    "x86_64": {"deb": "amd64", "rpm": "x86_64", "cuda": "x86_64"},
    "aarch64": {"deb": "arm64", "rpm": "aarch64", "cuda": "sbsa"},
}

# Docker's directory for the RHEL family, by os-release ID: Red Hat's own, else the CentOS
# one Docker documents for rebuilds (Rocky, AlmaLinux, CentOS Stream, Oracle Linux).
DOCKER_RPM_DISTRO: Dict[str, str] = {"rhel": "rhel"}
DOCKER_RPM_DISTRO_DEFAULT = "centos"

CUDA_DEB_KEY = "EB693B3035CD5710E231E123A4B469963BF863CC"
CUDA_RPM_KEY = "610C7B14E068A878070DA4E99CD0A493D42D0685"
# EPEL's keys, per EPEL release (RPM-GPG-KEY-EPEL-8, -9, -10).
EPEL_KEYS = {
    "8": "94E279EB8D8F25B21810ADF121EA45AB2F86D6A1",
    "9": "FF8AD1344597106ECE813B918A3872BF3228467C",
    "10": "7D8D15CBFC4E62688591FB2633D98517E37ED158",
}
TOOLKIT_KEY = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
# Docker signs its apt and its RPM repositories with different keys (docs/repositories.md, "Facts").
DOCKER_DEB_KEY = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_RPM_KEY = "060A61C51B558A7F742B77AAC52FEB6B621E9F35"

# Per repository: its label, the vendor's base, then per package family the layout below the
# base ("path"; for apt also "suite" and "components", a flat repository has suite "/" and
# no components), the key path below the base, the pinned fingerprint, the dnf checks; the
# packages gpu-install installs from it; and where the vendor publishes nothing ("absent",
# with the fix) or no key could be pinned ("unpinned").
# Placeholders: {cuda} {cuda_arch} {codename} {deb_arch} {rpm_arch} {releasever} {distro}
# ({distro}: the base id for apt, DOCKER_RPM_DISTRO for dnf).
VENDORS: Dict[str, Dict[str, Any]] = {
    "cuda": {
        "label": "NVIDIA CUDA",
        "base": "https://developer.download.nvidia.com/compute/cuda/repos",
        "debian": {
            "path": "{cuda}/{cuda_arch}/",
            "suite": "/",
            "components": (),
            "key": "{cuda}/{cuda_arch}/{cuda_key}",
            "default_key": "3bf863cc.pub",
            "fingerprint": CUDA_DEB_KEY,
        },
        "redhat": {
            "path": "{cuda}/{cuda_arch}",
            "key": "{cuda}/{cuda_arch}/{cuda_key}",
            "default_key": "D42D0685.pub",
            "fingerprint": CUDA_RPM_KEY,
            "gpgcheck": True,
            "repo_gpgcheck": False,
        },
        "packages": ("cuda-drivers",),
        # NVIDIA publishes debian11 and debian13 for x86_64 only.
        "absent": {
            ("debian", "11", "aarch64"): "NVIDIA publishes no CUDA repository for Debian 11 on aarch64: "
            "set nvidia_driver_source: distro",
            ("debian", "13", "aarch64"): "NVIDIA publishes no CUDA repository for Debian 13 on aarch64: "
            "set nvidia_driver_source: distro",
        },
        # Debian 13's and RHEL 10's CUDA repositories are signed by newer keys (8793F200, CDF6BA43) whose full
        # fingerprints no NVIDIA source publishes: the user pins them (gpu_install_repositories.cuda.fingerprint).
        "unpinned": (("debian", "13"), ("rhel", "10")),
    },
    "nvidia_container_toolkit": {
        "label": "NVIDIA Container Toolkit",
        "base": "https://nvidia.github.io/libnvidia-container",
        "debian": {
            "path": "stable/deb/{deb_arch}/",
            "suite": "/",
            "components": (),
            "key": "gpgkey",
            "fingerprint": TOOLKIT_KEY,
        },
        # NVIDIA signs the repository metadata, whose checksums cover the packages; the
        # packages are signed by a subkey rpm cannot verify (NVIDIA/nvidia-docker#1286).
        "redhat": {
            "path": "stable/rpm/{rpm_arch}",
            "key": "gpgkey",
            "fingerprint": TOOLKIT_KEY,
            "gpgcheck": False,
            "repo_gpgcheck": True,
        },
        "packages": ("nvidia-container-toolkit",),
        "absent": {},
        "unpinned": (),
    },
    "docker": {
        "label": "Docker CE",
        "base": "https://download.docker.com/linux",
        "debian": {
            "path": "{distro}",
            "suite": "{codename}",
            "components": ("stable",),
            "key": "{distro}/gpg",
            "fingerprint": DOCKER_DEB_KEY,
        },
        "redhat": {
            "path": "{distro}/{releasever}/{rpm_arch}/stable",
            "key": "{distro}/gpg",
            "fingerprint": DOCKER_RPM_KEY,
            "gpgcheck": True,
            "repo_gpgcheck": False,
        },
        "packages": ("docker-ce", "docker-ce-cli", "containerd.io"),
        "absent": {
            ("amzn", "2023", "x86_64"): "Docker publishes no docker-ce repository for Amazon Linux 2023: "
            "set docker_package: auto to use Amazon Linux's own docker package",
            ("amzn", "2023", "aarch64"): "Docker publishes no docker-ce repository for Amazon Linux 2023: "
            "set docker_package: auto to use Amazon Linux's own docker package",
        },
        "unpinned": (),
    },
    # Fedora's EPEL, for dkms on RHEL and its rebuilds (Rocky, AlmaLinux, CentOS Stream); Oracle Linux mirrors
    # EPEL in its own repositories and Amazon Linux has none. EPEL 10 publishes one repository per RHEL 10 minor
    # release ({epel}: 8, 9, 10.0, 10.1, ...). Its packages need CodeReady Builder (driver.CODEREADY).
    "epel": {
        "label": "EPEL",
        "base": "https://dl.fedoraproject.org/pub/epel",
        "redhat": {
            "path": "{epel}/Everything/{rpm_arch}",
            "key": "RPM-GPG-KEY-EPEL-{releasever}",
            "fingerprint": EPEL_KEYS,
            "gpgcheck": True,
            "repo_gpgcheck": False,
        },
        "packages": ("dkms",),
        "absent": {
            ("amzn", "2023", "x86_64"): "EPEL does not serve Amazon Linux 2023",
            ("amzn", "2023", "aarch64"): "EPEL does not serve Amazon Linux 2023",
        },
        "unpinned": (),
    },
}


class RepoError(errors.Failure):
    """A repository problem with its exit class and one sentence for the user."""


def keyring_path(repo_id: str, family: str) -> str:
    """The keyring gpu-install writes for a repository (family: debian | redhat)."""
    if family == "debian":
        return f"{APT_KEYRING_DIR}/{FILE_PREFIX}{repo_id}.gpg"
    return f"{RPM_KEY_DIR}/{FILE_PREFIX}{repo_id}.asc"


def source_path(repo_id: str, family: str) -> str:
    """The apt .sources or dnf .repo file gpu-install writes for a repository."""
    if family == "debian":
        return f"{APT_SOURCES_DIR}/{FILE_PREFIX}{repo_id}.sources"
    return f"{DNF_REPOS_DIR}/{FILE_PREFIX}{repo_id}.repo"


@dataclass(frozen=True)
class Repo:
    """One repository as this host will use it."""

    id: str
    label: str
    family: str  # debian | redhat
    url: str  # the base: the vendor's, or the mirror's gpu_install_repositories.<id>.url
    uri: str  # apt URIs / dnf baseurl (the base plus the vendor's layout)
    suite: str  # apt only
    components: Tuple[str, ...]  # apt only; empty for a flat repository
    arch: str  # dpkg or rpm spelling
    key_url: str
    fingerprint: str
    gpgcheck: bool = True
    repo_gpgcheck: bool = False
    packages: Tuple[str, ...] = ()
    mirrored: bool = False
    releasever: str = ""

    @property
    def keyring_path(self) -> str:
        return keyring_path(self.id, self.family)

    @property
    def source_path(self) -> str:
        return source_path(self.id, self.family)

    @property
    def setting(self) -> str:
        return f"gpu_install_repositories.{self.id}"


def _os(facts: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the whole gpu_facts result, or just its ``os`` part."""
    inner = facts.get("os") if isinstance(facts, Mapping) else None
    return inner if isinstance(inner, Mapping) else facts


def base_of(facts: Mapping[str, Any]) -> Tuple[str, str]:
    os_facts = _os(facts)
    like = os_facts.get("like") or {}
    key = (str(like.get("id") or os_facts.get("id") or ""), str(like.get("version_id") or ""))
    if key not in BASES:
        name = os_facts.get("name") or " ".join(x for x in key if x) or "this system"
        supported = ", ".join(f"{i} {v}" for i, v in BASES)
        raise RepoError(
            errors.UNSUPPORTED, f"gpu-install has no package repositories for {name}: it supports {supported}."
        )
    return key


# What a proxy URL, written into apt.conf as a quoted string, must not hold besides whitespace and control
# characters (which no URL anywhere may hold: they end the value in sources, .repo and apt.conf files alike):
# a quote ends apt.conf's string, ';' and braces start another option.
_PROXY_FORBIDDEN = "\"'`;{}\\"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_url(
    value: Any, setting: str, schemes: Tuple[str, ...] = ("http", "https", "file"), forbidden: str = ""
) -> str:
    """``value`` as a URL of one of ``schemes`` that is safe to write into any package manager file.

    RepoError (exit 4) naming ``setting`` otherwise.
    """
    names = ", ".join(schemes[:-1]) + " or " + schemes[-1] if len(schemes) > 1 else schemes[0]
    if not isinstance(value, str) or not value.strip():
        raise RepoError(errors.INVALID_INPUT, f"{setting} must be a URL ({names}), not {_short(value)}.")
    url = value.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise RepoError(
            errors.INVALID_INPUT, f"{setting} must not contain spaces or control characters: {_short(url)}."
        )
    bad = sorted({c for c in url if c in forbidden})
    if bad:
        raise RepoError(
            errors.INVALID_INPUT, f"{setting} must not contain {' '.join(bad)} (percent-encode them): {_short(url)}."
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = None
    if parts is None or not port_ok or parts.scheme not in schemes or (parts.scheme != "file" and not parts.hostname):
        raise RepoError(errors.INVALID_INPUT, f"{setting} must be an {names} URL, not {_short(url)}.")
    return url


def _check_url(value: Any, setting: str) -> str:
    return check_url(value, setting)


def check_proxy(value: Any, setting: str = "gpu_install_proxy") -> str:
    """The proxy setting: empty, or an http(s) URL safe to write into apt.conf and dnf .repo files."""
    if value is None or value == "":
        return ""
    return check_url(value, setting, ("http", "https"), _PROXY_FORBIDDEN)


def check_overrides(overrides: Any, setting: str = "gpu_install_repositories") -> None:
    """``gpu_install_repositories`` checked without the host's facts: ids, keys, URLs and fingerprints."""
    if overrides is None:
        return
    if not isinstance(overrides, Mapping):
        raise RepoError(errors.INVALID_INPUT, f"{setting} must be a mapping of repository ids to mirrors.")
    for repo_id, user in overrides.items():
        if repo_id not in VENDORS:
            raise RepoError(
                errors.INVALID_INPUT,
                f"{setting} has unknown repository id {_short(repo_id)}: gpu-install knows {', '.join(REPO_IDS)}.",
            )
        where = f"{setting}.{repo_id}"
        if user is None:
            continue
        if not isinstance(user, Mapping):
            raise RepoError(errors.INVALID_INPUT, f"{where} must be a mapping with url, key_url and fingerprint.")
        unknown = sorted(str(k) for k in set(user) - set(OVERRIDE_KEYS))
        if unknown:
            raise RepoError(
                errors.INVALID_INPUT,
                f"{where} has unknown key(s) {', '.join(map(_short, unknown))}: it takes {', '.join(OVERRIDE_KEYS)}.",
            )
        for key in ("url", "key_url"):
            if user.get(key):
                check_url(user[key], f"{where}.{key}")
        if user.get("fingerprint"):
            if not isinstance(user["fingerprint"], str):
                raise RepoError(errors.INVALID_INPUT, f"{where}.fingerprint must be a string of hex digits.")
            try:
                openpgp.normalize_fingerprint(user["fingerprint"])
            except ValueError as exc:
                raise RepoError(errors.INVALID_INPUT, f"{where}.fingerprint: {exc}.") from None


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def packages_for(repo_id: str) -> Tuple[str, ...]:
    """The packages gpu-install installs from a repository when the driver's plan names none."""
    return tuple(VENDORS[repo_id]["packages"])


def _epel_release(base: Mapping[str, str], os_facts: Mapping[str, Any]) -> str:
    """EPEL's directory: the major release (8, 9), from EPEL 10 on the RHEL minor release too (10.0, 10.1)."""
    major = base.get("releasever", "")
    if not major.isdigit() or int(major) < 10:
        return major
    version = str(os_facts.get("version_id") or "")
    return version if re.fullmatch(re.escape(major) + r"\.\d+", version) else major


def resolve(
    repo_id: str,
    facts: Mapping[str, Any],
    overrides: Optional[Mapping[str, Any]] = None,
    packages: Optional[Sequence[str]] = None,
) -> Repo:
    """The repository ``repo_id`` for this host, with ``gpu_install_repositories`` applied."""
    if repo_id not in VENDORS:
        raise RepoError(
            errors.INVALID_INPUT, f"Unknown repository id {repo_id!r}: gpu-install knows {', '.join(REPO_IDS)}."
        )
    setting = f"gpu_install_repositories.{repo_id}"
    user = (overrides or {}).get(repo_id) or {}
    if not isinstance(user, Mapping):
        raise RepoError(errors.INVALID_INPUT, f"{setting} must be a mapping with url, key_url and fingerprint.")
    unknown = sorted(set(user) - set(OVERRIDE_KEYS))
    if unknown:
        raise RepoError(
            errors.INVALID_INPUT,
            f"{setting} has unknown key(s) {', '.join(map(str, unknown))}: it takes {', '.join(OVERRIDE_KEYS)}.",
        )
    vendor = VENDORS[repo_id]
    os_facts = _os(facts)
    base_key = base_of(os_facts)
    base = BASES[base_key]
    family = base["family"]
    arch = str(os_facts.get("arch") or "")
    if arch not in ARCHES:
        raise RepoError(
            errors.UNSUPPORTED,
            f"The {vendor['label']} repository has no packages for the {arch or 'unknown'} architecture: "
            f"gpu-install supports {' and '.join(ARCHES)}.",
        )
    absent = vendor["absent"].get((*base_key, arch))
    if absent:
        raise RepoError(errors.UNSUPPORTED, absent + ".")
    if family not in vendor:
        raise RepoError(
            errors.UNSUPPORTED,
            f"The {vendor['label']} repository serves the RHEL family only, not {base_key[0]} {base_key[1]}.",
        )
    layout = vendor[family]
    distro = base_key[0]
    if family == "redhat":
        distro = DOCKER_RPM_DISTRO.get(str(os_facts.get("id") or ""), DOCKER_RPM_DISTRO_DEFAULT)
    spell = {
        "cuda": base["cuda"],
        "cuda_arch": ARCHES[arch]["cuda"],
        "codename": base.get("codename", ""),
        "deb_arch": ARCHES[arch]["deb"],
        "rpm_arch": ARCHES[arch]["rpm"],
        "releasever": base.get("releasever", ""),
        "distro": distro,
        "cuda_key": base.get("cuda_key") or layout.get("default_key", ""),
        "epel": _epel_release(base, os_facts),
    }

    url = _check_url(user["url"], f"{setting}.url").rstrip("/") if user.get("url") else vendor["base"]
    key_url = (
        _check_url(user["key_url"], f"{setting}.key_url")
        if user.get("key_url")
        else _join(url, layout["key"].format(**spell))
    )
    if user.get("fingerprint"):
        try:
            fingerprint = openpgp.normalize_fingerprint(str(user["fingerprint"]))
        except ValueError as exc:
            raise RepoError(errors.INVALID_INPUT, f"{setting}.fingerprint: {exc}.") from None
    elif base_key in vendor["unpinned"]:
        fingerprint = ""
    else:
        pinned = layout["fingerprint"]
        fingerprint = pinned.get(base.get("releasever", ""), "") if isinstance(pinned, Mapping) else pinned
    if not fingerprint:
        raise RepoError(
            errors.PACKAGE_SOURCE,
            f"The {vendor['label']} repository for {base_key[0]} {base_key[1]} has no pinned key fingerprint: "
            f"set {setting}.fingerprint to the fingerprint of the key at {key_url}, checked through a channel "
            "you trust (gpu-install does not trust a key on first use).",
        )
    return Repo(
        id=repo_id,
        label=vendor["label"],
        family=family,
        url=url,
        uri=_join(url, layout["path"].format(**spell)),
        suite=str(layout.get("suite", "")).format(**spell),
        components=tuple(layout.get("components", ())),
        arch=ARCHES[arch]["deb" if family == "debian" else "rpm"],
        key_url=key_url,
        fingerprint=fingerprint,
        gpgcheck=bool(layout.get("gpgcheck", True)),
        repo_gpgcheck=bool(layout.get("repo_gpgcheck", False)),
        packages=tuple(packages) if packages else tuple(vendor["packages"]),
        mirrored=bool(user.get("url")),
        releasever=base.get("releasever", ""),
    )


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def render_deb822(repo: Repo, keyring: Optional[str] = None) -> str:
    """The apt ``.sources`` stanza (Signed-By the repository's own keyring)."""
    lines = [
        HEADER.format(name="gpu_install.nvidia.repositories", id=repo.id).rstrip("\n"),
        f"# {repo.label} repository; key fingerprint {repo.fingerprint}",
        "Types: deb",
        f"URIs: {repo.uri}",
        f"Suites: {repo.suite}",
    ]
    if repo.components:
        lines.append("Components: " + " ".join(repo.components))
    lines.append(f"Architectures: {repo.arch}")
    lines.append(f"Signed-By: {keyring or repo.keyring_path}")
    return "\n".join(lines) + "\n"


def render_dnf(repo: Repo, proxy: str = "", keyfile: Optional[str] = None) -> str:
    """The dnf ``.repo`` section (gpgkey is the local, pinned key file)."""
    lines = [
        HEADER.format(name="gpu_install.nvidia.repositories", id=repo.id).rstrip("\n"),
        f"# {repo.label} repository; key fingerprint {repo.fingerprint}",
        f"[{FILE_PREFIX}{repo.id}]",
        f"name={repo.label} (gpu-install)",
        f"baseurl={repo.uri}",
        "enabled=1",
        f"gpgcheck={int(repo.gpgcheck)}",
        f"repo_gpgcheck={int(repo.repo_gpgcheck)}",
        f"gpgkey=file://{keyfile or repo.keyring_path}",
    ]
    if repo.uri.startswith("https:"):
        lines.append("sslverify=1")
    if proxy:
        lines.append(f"proxy={check_proxy(proxy)}")
    return "\n".join(lines) + "\n"


def apt_proxy_conf(repos: Sequence[Repo], proxy: str) -> str:
    """Per-host apt proxy lines for the repositories' hosts (empty without a proxy)."""
    if not proxy:
        return ""
    proxy = check_proxy(proxy)
    hosts = sorted({(u.scheme, u.hostname) for u in (urllib.parse.urlsplit(r.uri) for r in repos) if u.hostname})
    if not hosts:
        return ""
    lines = ["// Written by gpu-install: gpu_install_proxy for the repositories gpu-install configured."]
    lines += [f'Acquire::{scheme}::Proxy::{host} "{proxy}";' for scheme, host in hosts]
    return "\n".join(lines) + "\n"


APT_PROXY_PATH = f"{APT_CONF_DIR}/90gpu-install-proxy"


def keyring_bytes(repo: Repo, key: bytes) -> bytes:
    """What the keyring file holds: the pinned key alone, binary for apt, armoured for rpm."""
    raw = openpgp.select(key, repo.fingerprint)
    return raw if repo.family == "debian" else openpgp.armor(raw)


def desired_files(repos: Sequence[Repo], keys: Mapping[str, bytes], proxy: str = "") -> List[Tuple[str, bytes]]:
    """(path, content) of every file gpu-install owns for these repositories, in write order (keys first)."""
    files: List[Tuple[str, bytes]] = []
    for repo in repos:
        files.append((repo.keyring_path, keyring_bytes(repo, keys[repo.id])))
    for repo in repos:
        text = render_deb822(repo) if repo.family == "debian" else render_dnf(repo, proxy)
        files.append((repo.source_path, text.encode()))
    apt = [r for r in repos if r.family == "debian"]
    conf = apt_proxy_conf(apt, proxy)
    if conf:
        files.append((APT_PROXY_PATH, conf.encode()))
    return files


# ---------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------
def _opener(proxy: str) -> urllib.request.OpenerDirector:
    handlers: List[Any] = []
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    return urllib.request.build_opener(*handlers)


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return str(getattr(reason, "strerror", None) or reason)
    return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__


def fetch(url: str, proxy: str = "", timeout: float = TIMEOUT, limit: int = KEY_MAX_BYTES) -> bytes:
    """GET ``url`` (http, https, file) through ``proxy``; OSError/ValueError on failure."""
    req = urllib.request.Request(url, headers={"User-Agent": "gpu-install"})  # noqa: S310 (http, https, file)
    with _opener(proxy).open(req, timeout=timeout) as resp:
        data = resp.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return bytes(data)


def head(url: str, proxy: str = "", timeout: float = TIMEOUT) -> Optional[str]:
    """None when ``url`` answers; else why not ("HTTP 404 Not Found", "Connection refused")."""
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
        return None if os.path.isfile(path) else "no such file"
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "gpu-install"})  # noqa: S310
    try:
        with _opener(proxy).open(req, timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return _why(exc)


def fetch_key(repo: Repo, proxy: str = "", timeout: float = TIMEOUT) -> bytes:
    """The repository's key, checked against the pin; RepoError (5) otherwise."""
    fix = f"check {repo.setting}.key_url and gpu_install_proxy"
    try:
        data = fetch(repo.key_url, proxy, timeout)
    except (OSError, ValueError) as exc:
        raise RepoError(
            errors.PACKAGE_SOURCE,
            f"The key of the {repo.id} repository could not be fetched from {repo.key_url} ({_why(exc)}): {fix}.",
        ) from None
    try:
        found = openpgp.fingerprints(data)
    except ValueError as exc:
        raise RepoError(
            errors.PACKAGE_SOURCE,
            f"The key of the {repo.id} repository at {repo.key_url} is not a usable OpenPGP public key ({exc}): {fix}.",
        ) from None
    if repo.fingerprint not in found:
        raise RepoError(
            errors.PACKAGE_SOURCE,
            f"The key of the {repo.id} repository at {repo.key_url} has fingerprint {', '.join(found)}, "
            f"not the pinned {repo.fingerprint}: check {repo.setting}.key_url, or set {repo.setting}.fingerprint "
            "if the mirror re-signs with its own key.",
        )
    return data


# ---------------------------------------------------------------------------
# Preflight: the real apt / dnf against scratch state
# ---------------------------------------------------------------------------
Runner = Callable[[Sequence[str]], Tuple[int, str]]

# Hooks apt runs around an update (appstream, PackageKit, command-not-found, docker-clean)
# would touch the host: the scratch runs clear them.
APT_SCRATCH_CONF = """#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Install-Pkgs;
"""

_UNREACHABLE = re.compile(
    r"(Could not connect[^\n]*|Could not resolve[^\n]*|Temporary failure resolving[^\n]*|"
    r"Connection failed[^\n]*|Connection timed out[^\n]*|Unable to connect[^\n]*|Failed to connect[^\n]*|"
    r"Connection refused[^\n]*|No route to host[^\n]*|Network is unreachable[^\n]*|Could not wait[^\n]*)"
)
_NOT_FOUND = re.compile(
    r"(\b40[34]\s+[A-Za-z ]+|does not have a Release file|File not found[^\n]*|Release file[^\n]*is not valid yet)"
)
_SIGNATURE = re.compile(
    r"(NO_PUBKEY \w+|BADSIG \w+|EXPKEYSIG \w+|REVKEYSIG \w+|ERRSIG \w+|is not signed|"
    r"signatures were invalid[^\n]*|signatures couldn't be verified[^\n]*|"
    r"Conflicting values set for option Signed-By[^\n]*)"
)


def classify_apt(output: str) -> Optional[Tuple[str, str]]:
    """(kind, apt's words) for a failed apt-get update: unreachable, not_found, signature, conflict, other."""
    conflict = re.search(r"Conflicting values set for option Signed-By[^\n]*", output)
    if conflict:
        return "conflict", conflict.group(0).strip()
    for kind, pattern in (("signature", _SIGNATURE), ("not_found", _NOT_FOUND), ("unreachable", _UNREACHABLE)):
        m = pattern.search(output)
        if m:
            return kind, m.group(0).strip().rstrip(".")
    errs = [ln[3:].strip() for ln in output.splitlines() if ln.startswith(("E: ", "W: Failed", "Err:"))]
    if errs:
        return "other", errs[0]
    return None


def _run(argv: Sequence[str], env: Optional[Mapping[str, str]] = None, timeout: float = 600) -> Tuple[int, str]:
    full_env = dict(os.environ, LC_ALL="C", LANG="C", DEBIAN_FRONTEND="noninteractive")
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} timed out after {timeout:.0f} s"
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


@dataclass
class Scratch:
    """A scratch apt root: sources, keys, lists and cache below one temporary directory."""

    root: str
    files: Dict[str, str] = field(default_factory=dict)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)


def _apt_options(scratch: Scratch, source_list: str, source_parts: str, lists: str, proxy: str) -> List[str]:
    opts = {
        "Dir::Etc::SourceList": source_list,
        "Dir::Etc::SourceParts": source_parts,
        "Dir::State::Lists": lists,
        "Dir::Cache": scratch.path("cache"),
        "Dir::Cache::archives": scratch.path("cache", "archives"),
        "Dir::Log": scratch.path("log"),
        "APT::Get::List-Cleanup": "0",
        "Acquire::Retries": "0",
        "Acquire::http::Timeout": "30",
        "Acquire::https::Timeout": "30",
        "Debug::NoLocking": "true",
    }
    if proxy:
        opts["Acquire::http::Proxy"] = proxy
        opts["Acquire::https::Proxy"] = proxy
    argv = ["-c", scratch.path("apt.conf")]
    for key, value in opts.items():
        argv += ["-o", f"{key}={value}"]
    return argv


def _failure(repo: Repo, kind: str, words: str) -> RepoError:
    where = f"The {repo.id} repository at {repo.uri}"
    if kind == "unreachable":
        fix = f"check {repo.setting}.url and gpu_install_proxy"
        return RepoError(errors.PACKAGE_SOURCE, f"{where} could not be reached ({words}): {fix}.")
    if kind == "not_found":
        fix = f"check that {repo.setting}.url keeps the vendor's layout below it"
        return RepoError(errors.PACKAGE_SOURCE, f"{where} has no repository index ({words}): {fix}.")
    if kind == "signature":
        return RepoError(
            errors.PACKAGE_SOURCE,
            f"{where} is not signed by the pinned key {repo.fingerprint} (apt: {words}): the repository may have "
            f"rotated its key; check {repo.setting}.key_url and {repo.setting}.fingerprint.",
        )
    if kind == "conflict":
        return RepoError(
            errors.PACKAGE_SOURCE,
            f"{where} is already configured on this host with another key ({words}): remove that apt source "
            "(and its keyring package) or point it at the same keyring, then run again.",
        )
    return RepoError(errors.PACKAGE_SOURCE, f"{where} failed to load ({words}): check {repo.setting}.url.")


def _has_package_lists(lists: str) -> bool:
    try:
        return any(name.endswith("_Packages") or "_Packages." in name for name in os.listdir(lists))
    except OSError:
        return False


def _link_host_lists(lists: str) -> None:
    host = "/var/lib/apt/lists"
    try:
        names = os.listdir(host)
    except OSError:
        return
    for name in names:
        src = os.path.join(host, name)
        if name in ("lock", "partial", "auxfiles") or not os.path.isfile(src):
            continue
        dst = os.path.join(lists, name)
        if not os.path.lexists(dst):
            os.symlink(src, dst)


def _host_source_parts(parts: str) -> None:
    host = "/etc/apt/sources.list.d"
    try:
        names = sorted(os.listdir(host))
    except OSError:
        return
    for name in names:
        if not name.endswith((".list", ".sources")) or name.startswith(FILE_PREFIX):
            continue  # gpu-install's own files are replaced by the scratch ones
        os.symlink(os.path.join(host, name), os.path.join(parts, name))


def preflight_apt(
    repos: Sequence[Repo], keys: Mapping[str, bytes], proxy: str = "", run: Optional[Runner] = None
) -> Dict[str, Any]:
    """Verify the repositories with the real apt in a scratch directory; RepoError on the first failure.

    Per repository: ``apt-get update`` of that source alone (signature and reachability);
    then, with the host's own sources and lists beside the new ones (read, never
    written), ``apt-get -s install`` of the packages and a HEAD of each package file the
    new repositories serve.
    """
    runner = run or _run
    report: Dict[str, Any] = {}
    root = tempfile.mkdtemp(prefix="gpu-install-preflight-")
    try:
        os.chmod(root, 0o755)  # noqa: S103 - apt's sandbox user reads the keys and writes partial/
        scratch = Scratch(root)
        for sub in ("keys", "sources", "empty", "parts", "lists", "lists/partial", "cache", "cache/archives"):
            os.makedirs(scratch.path(sub), exist_ok=True)
        os.makedirs(scratch.path("cache", "archives", "partial"), exist_ok=True)
        os.makedirs(scratch.path("log"), exist_ok=True)
        with open(scratch.path("apt.conf"), "w") as fh:
            fh.write(APT_SCRATCH_CONF)
        for repo in repos:
            keyring = scratch.path("keys", f"{FILE_PREFIX}{repo.id}.gpg")
            with open(keyring, "wb") as fh:
                fh.write(keyring_bytes(repo, keys[repo.id]))
            os.chmod(keyring, 0o644)
            source = scratch.path("sources", f"{FILE_PREFIX}{repo.id}.sources")
            with open(source, "w") as fh:
                fh.write(render_deb822(repo, keyring=keyring))
            os.symlink(source, scratch.path("parts", os.path.basename(source)))
            rc, out = runner(
                [
                    "apt-get",
                    "update",
                    "-q",
                    *_apt_options(scratch, source, scratch.path("empty"), scratch.path("lists"), proxy),
                ]
            )
            failed = classify_apt(out)
            if failed is None and rc != 0:
                failed = ("other", out.strip().splitlines()[-1] if out.strip() else f"apt-get exited {rc}")
            if failed is not None:
                raise _failure(repo, *failed)
            report[repo.id] = {"index": "ok"}
        # Install simulation: the host's sources and lists, plus the new ones.
        _host_source_parts(scratch.path("parts"))
        source_list = "/etc/apt/sources.list" if os.path.isfile("/etc/apt/sources.list") else "/dev/null"
        opts = _apt_options(scratch, source_list, scratch.path("parts"), scratch.path("lists"), proxy)
        if _has_package_lists("/var/lib/apt/lists"):
            _link_host_lists(scratch.path("lists"))
        else:
            # A host that never ran apt-get update (fresh images often have no lists): fetch its own
            # sources' indexes into the scratch lists, so that dependencies resolve as they will.
            runner(["apt-get", "update", "-q", *opts])
        for repo in repos:
            if not repo.packages:
                continue
            rc, out = runner(["apt-get", "install", "-s", "-q", "--no-install-recommends", *opts, *repo.packages])
            conflict = classify_apt(out) if rc != 0 else None
            if conflict and conflict[0] == "conflict":
                raise _failure(repo, *conflict)
            if rc != 0:
                raise RepoError(
                    errors.PACKAGE_SOURCE,
                    f"{', '.join(repo.packages)} cannot be installed from the {repo.id} repository at {repo.uri} "
                    f"({_apt_reason(out)}): check {repo.setting}.url.",
                )
            rc, out = runner(
                ["apt-get", "install", "--print-uris", "-qq", "--no-install-recommends", *opts, *repo.packages]
            )
            uris = [m.group(1) for m in re.finditer(r"^'([^']+)'", out, re.M)]
            ours = [u for u in uris if any(u.startswith(r.uri.rstrip("/") + "/") for r in repos)]
            _check_package_files(repo, ours, proxy)
            report[repo.id] = {"index": "ok", "packages": list(repo.packages), "checked_uris": len(ours)}
        return report
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_package_files(repo: Repo, uris: Sequence[str], proxy: str) -> None:
    """Every package file the repository lists answers: one missing is caught before any change."""
    for uri in uris:
        why = head(uri, proxy)
        if why is not None:
            raise RepoError(
                errors.PACKAGE_SOURCE,
                f"The {repo.id} repository at {repo.uri} lists {uri.rsplit('/', 1)[-1]} but {uri} "
                f"answers {why}: the repository or mirror is incomplete; check {repo.setting}.url.",
            )


def _apt_reason(out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.startswith("E: ") or "but it is not" in ln]
    lines = [ln for ln in lines if ln]
    reason = "; ".join(lines[:3]) or (out.strip().splitlines()[-1] if out.strip() else "apt-get failed")
    return reason.replace("E: ", "")


def preflight_dnf(
    repos: Sequence[Repo], keys: Mapping[str, bytes], proxy: str = "", run: Optional[Runner] = None
) -> Dict[str, Any]:
    """Verify the repositories with the real dnf in a scratch install root and cache."""
    runner = run or _run
    report: Dict[str, Any] = {}
    root = tempfile.mkdtemp(prefix="gpu-install-preflight-")
    try:
        for sub in ("keys", "repos", "root", "cache", "log"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        for repo in repos:
            keyfile = os.path.join(root, "keys", f"{FILE_PREFIX}{repo.id}.asc")
            with open(keyfile, "wb") as fh:
                fh.write(keyring_bytes(repo, keys[repo.id]))
            with open(os.path.join(root, "repos", f"{FILE_PREFIX}{repo.id}.repo"), "w") as fh:
                fh.write(render_dnf(repo, proxy, keyfile=keyfile))
            base = [
                "dnf",
                "-y",
                "-q",
                f"--installroot={root}/root",
                f"--setopt=reposdir={root}/repos",
                f"--setopt=cachedir={root}/cache",
                f"--setopt=logdir={root}/log",
                f"--setopt=persistdir={root}/persist",
                "--setopt=skip_if_unavailable=False",
                "--setopt=timeout=30",
                "--setopt=retries=1",
                f"--releasever={repo.releasever or '9'}",
                "--disablerepo=*",
                f"--enablerepo={FILE_PREFIX}{repo.id}",
                "--noplugins",
            ]
            rc, out = runner([*base, "makecache"])
            if rc != 0:
                raise _failure(repo, *(classify_dnf(out) or _probe(repo, proxy) or ("other", _last(out, rc))))
            report[repo.id] = {"index": "ok"}
            if not repo.packages:
                continue
            # NVIDIA's EL 8/9 and Amazon Linux repositories are modular: with no stream enabled in this scratch root,
            # dnf would hide every driver package. Asked here is only whether the repository offers them (dnf 4 has
            # the option since late 2019, rpm-software-management/ci-dnf-stack#673; dnf5 too).
            rc, out = runner(
                [*base, "repoquery", "--disable-modular-filtering", "--latest-limit=1", "--location", *repo.packages]
            )
            if rc != 0:
                raise _failure(repo, *(classify_dnf(out) or ("other", _last(out, rc))))
            uris = [ln.strip() for ln in out.splitlines() if re.match(r"^(https?|file|ftp)://", ln.strip())]
            found = {u.rsplit("/", 1)[-1] for u in uris}
            missing = [p for p in repo.packages if not any(n.startswith(p + "-") for n in found)]
            if missing:
                raise RepoError(
                    errors.PACKAGE_SOURCE,
                    f"The {repo.id} repository at {repo.uri} does not offer {', '.join(missing)}: "
                    f"check {repo.setting}.url.",
                )
            _check_package_files(repo, uris, proxy)
            report[repo.id] = {"index": "ok", "packages": list(repo.packages), "checked_uris": len(uris)}
        return report
    finally:
        stop_dnf_gpg_agents(root)
        shutil.rmtree(root, ignore_errors=True)


def stop_dnf_gpg_agents(tree: str) -> None:
    """Stop the gpg-agents that dnf (librepo, through gpgme) starts for each repository's keyring below ``tree``.

    librepo verifies ``repo_gpgcheck`` signatures in a GnuPG home per repository (``<cachedir>/<repo>/pubring``)
    and leaves its agent running; each holds inotify instances until none are left for anyone.
    """
    for dirpath, dirnames, _files in os.walk(tree):
        if os.path.basename(dirpath) == "pubring":
            dirnames[:] = []
            _run(["gpgconf", "--homedir", dirpath, "--kill", "gpg-agent"], timeout=10)


def _probe(repo: Repo, proxy: str) -> Optional[Tuple[str, str]]:
    """Why dnf could not download the index, told by fetching it ourselves."""
    why = head(_join(repo.uri, "repodata/repomd.xml"), proxy)
    if why is None:
        return None
    return ("not_found" if re.match(r"HTTP 40[34]|no such file", why) else "unreachable"), why


def _last(out: str, rc: int) -> str:
    lines = [ln.strip() for ln in out.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {rc}"


def classify_dnf(output: str) -> Optional[Tuple[str, str]]:
    """(kind, dnf's words) for a failed dnf makecache."""
    m = re.search(
        r"(repomd\.xml GPG signature verification error[^\n]*|GPG[^\n]*(?:fail|error)[^\n]*|"
        r"[Bb]ad GPG signature[^\n]*|signature[^\n]*could not be verified[^\n]*)",
        output,
    )
    if m:
        return "signature", m.group(0).strip()
    m = re.search(r"(Status code: 40[34][^\n]*|\b404\b[^\n]*)", output)
    if m:
        return "not_found", m.group(0).strip()
    m = re.search(
        r"(Couldn't connect[^\n]*|Could not resolve[^\n]*|Connection refused[^\n]*|"
        r"timed out[^\n]*|Failed to connect[^\n]*|Curl error \(7\)[^\n]*)",
        output,
    )
    if m:
        return "unreachable", m.group(0).strip()
    return None


def preflight(
    repos: Sequence[Repo], proxy: str = "", timeout: float = TIMEOUT, run: Optional[Runner] = None
) -> Tuple[Dict[str, bytes], Dict[str, Any]]:
    """Fetch and check every key, then every repository; (keys by id, report). RepoError on failure."""
    keys = {repo.id: fetch_key(repo, proxy, timeout) for repo in repos}
    apt = [r for r in repos if r.family == "debian"]
    dnf = [r for r in repos if r.family == "redhat"]
    report: Dict[str, Any] = {}
    if apt:
        report.update(preflight_apt(apt, keys, proxy, run))
    if dnf:
        report.update(preflight_dnf(dnf, keys, proxy, run))
    return keys, report


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_atomic(path: str, content: bytes, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` (following a link), root-owned where we are root, atomically."""
    real = os.path.realpath(path)
    os.makedirs(os.path.dirname(real), mode=0o755, exist_ok=True)
    uid, gid = (0, 0) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    fileio.write_atomic(real, content, mode, uid, gid)


def describe(path: str, content: Optional[bytes]) -> str:
    """Text for a diff: the file itself, or a summary of a binary keyring."""
    if content is None:
        return ""
    if path.endswith(".gpg"):
        try:
            fprs = openpgp.fingerprints(content)
        except ValueError:
            return f"(binary file, {len(content)} bytes)\n"
        return f"(binary OpenPGP keyring, {len(content)} bytes, fingerprint {', '.join(fprs)})\n"
    return content.decode("utf-8", "replace")

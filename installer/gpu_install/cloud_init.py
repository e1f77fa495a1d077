"""cloud-init user-data that turns a fresh cloud VM into a verified GPU host (templates/cloud-init).

The user-data is rendered from Jinja2 templates and a data table of what differs per cloud
(``templates/cloud-init/providers.yml``); what a VM can detect itself (NVSwitches and Fabric Manager,
Secure Boot, the kernel flavour, the Docker flavour) is left to the roles. The output depends only on
the inputs: rendering twice gives the same bytes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__
from .errors import GpuInstallError, codes

TEMPLATE_DIR = "cloud-init"
_PACKAGE_DIR = Path(__file__).resolve().parent
# PEP 427: {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
_WHEEL_RE = re.compile(r"^gpu_install-(?P<version>[^-]+)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")


def templates_dir() -> Path:
    """templates/ inside the installed package (the wheel's force-include), else the source checkout's."""
    bundled = _PACKAGE_DIR / "templates"
    if (bundled / TEMPLATE_DIR).is_dir():
        return bundled
    return _PACKAGE_DIR.parent.parent / "templates"


def providers() -> dict[str, dict[str, Any]]:
    """Each provider's data, with the table's defaults filled in."""
    import yaml

    data = yaml.safe_load((templates_dir() / TEMPLATE_DIR / "providers.yml").read_text(encoding="utf-8"))
    defaults = data.get("defaults") or {}
    return {name: {**defaults, **entry} for name, entry in data["providers"].items()}


PROVIDERS = ("aws", "azure", "gcp")


@dataclass(frozen=True)
class InstallSource:
    """Where the VM gets gpu-install: a pinned version from an index (PyPI or a mirror), or a wheel URL;
    ``find_links`` is a wheelhouse (with no index given, the only source: the air-gapped path)."""

    package_version: str | None = None
    wheel_url: str | None = None
    index_url: str | None = None
    find_links: str | None = None

    def check(self) -> None:
        if self.package_version and self.wheel_url:
            raise GpuInstallError(codes.USAGE, "give --package-version or --wheel-url, not both.")
        if self.package_version is not None and not _VERSION_RE.match(self.package_version):
            raise GpuInstallError(codes.USAGE, f"--package-version {self.package_version!r} is not a version.")
        for flag, url in (("--wheel-url", self.wheel_url), ("--index-url", self.index_url),
                          ("--find-links", self.find_links)):  # fmt: skip
            if url is not None:
                _check_url(flag, url)
        if self.wheel_url and not _WHEEL_RE.match(_wheel_name(self.wheel_url)):
            raise GpuInstallError(
                codes.USAGE,
                f"--wheel-url {self.wheel_url} does not name a gpu-install wheel (gpu_install-VERSION-...whl).",
            )

    @property
    def requirement(self) -> str:
        return self.wheel_url or f"gpu-install=={self.package_version or __version__}"

    def plain_http_hosts(self) -> list[str]:
        hosts = {urlsplit(u).netloc for u in (self.index_url, self.find_links) if u and u.startswith("http://")}
        return sorted(hosts)

    @property
    def version(self) -> str:
        """The version the VM will run ("" where unknown)."""
        if self.wheel_url:
            match = _WHEEL_RE.match(_wheel_name(self.wheel_url))
            return match.group("version") if match else ""
        return self.package_version or __version__


def _wheel_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def _check_url(what: str, url: str, code: int = codes.USAGE) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.scheme == "file"):
        raise GpuInstallError(code, f"{what} {url} is not an http(s) or file URL.")
    if parts.username or parts.password:
        raise GpuInstallError(
            code,
            f"{what} carries credentials: user-data is readable on the VM through the metadata service, so "
            "gpu-install embeds no secret. Reach the mirror through the VM's network or identity instead.",
        )


def _settings_text(values: dict[str, Any]) -> str:
    import yaml

    if not values:
        return "# gpu-install settings: none given, the roles' defaults apply\n"
    return yaml.safe_dump(values, default_flow_style=False, sort_keys=False, allow_unicode=True)


def _env_text(pairs: list[tuple[str, Any]]) -> str:
    lines = ["# Inputs of /usr/local/sbin/gpu-install-bootstrap (rendered by gpu-install cloud-init)."]
    for key, value in pairs:
        text = "1" if value is True else "0" if value is False else str(value)
        lines.append(f"{key}={shlex.quote(text)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Rendered:
    provider: str
    text: str
    notes: tuple[str, ...]


def render(provider: str, values: dict[str, Any], source: InstallSource) -> Rendered:
    """The #cloud-config user-data for ``provider`` with these (validated) settings."""
    import jinja2

    table = providers()
    if provider not in table:
        raise GpuInstallError(codes.USAGE, f"unknown provider {provider!r}: use one of {', '.join(sorted(table))}.")
    source.check()
    data = table[provider]
    if values.get("gpu_install_reboot") == "if_needed":
        raise GpuInstallError(
            codes.UNSUPPORTED,
            "gpu_install_reboot: if_needed cannot reboot a VM from inside itself: the user-data reboots once "
            "on exit 9 and finishes after it; leave gpu_install_reboot unset.",
        )
    proxy = str(values.get("gpu_install_proxy") or "")
    if proxy:
        _check_url("gpu_install_proxy", proxy, codes.INVALID_INPUT)
    image_build = bool(values.get("gpu_install_image_build"))
    host_values = {k: v for k, v in values.items() if k != "gpu_install_image_build"}
    metadata = data["metadata"]
    token = metadata.get("token") or {}
    no_index = bool(source.find_links) and not source.index_url
    env = _env_text([
        ("GPU_INSTALL_PROVIDER", provider),
        ("GPU_INSTALL_REQUIREMENT", source.requirement),
        ("GPU_INSTALL_WANT_VERSION", source.version),
        ("GPU_INSTALL_INDEX_URL", source.index_url or ""),
        ("GPU_INSTALL_FIND_LINKS", source.find_links or ""),
        ("GPU_INSTALL_NO_INDEX", no_index),
        # pip ignores a plain-HTTP index or wheelhouse unless told to trust it: the user named it.
        ("GPU_INSTALL_TRUSTED_HOSTS", " ".join(source.plain_http_hosts())),
        ("GPU_INSTALL_PROXY", proxy),
        ("GPU_INSTALL_LOCK_TIMEOUT", int(values.get("gpu_install_lock_timeout") or 300)),
        ("GPU_INSTALL_IMAGE_BUILD", image_build),
        # Empty where the settings choose the driver source themselves.
        ("GPU_INSTALL_SECURE_BOOT_SOURCE",
         "" if "nvidia_driver_source" in values else data.get("secure_boot_driver_source") or ""),
        ("GPU_INSTALL_MD_URL", metadata["url"]),
        ("GPU_INSTALL_MD_HEADER", metadata.get("header") or ""),
        ("GPU_INSTALL_MD_TOKEN_URL", token.get("url") or ""),
        ("GPU_INSTALL_MD_TOKEN_HEADER", token.get("header") or ""),
        ("GPU_INSTALL_MD_TOKEN_USE", token.get("use_header") or ""),
        ("GPU_INSTALL_NVSWITCH_TYPES", " ".join(data.get("nvswitch_types") or [])),
    ])  # fmt: skip
    here = templates_dir() / TEMPLATE_DIR
    env_j2 = jinja2.Environment(  # noqa: S701 - YAML, not HTML
        loader=jinja2.FileSystemLoader(str(here)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    text = env_j2.get_template("user-data.yaml.j2").render(
        version=__version__,
        provider_name=provider,
        provider=data,
        requirement=source.requirement,
        image_build=image_build,
        config=_settings_text(host_values).rstrip("\n"),
        image_build_config=_settings_text({**host_values, "gpu_install_image_build": True}).rstrip("\n"),
        env=env.rstrip("\n"),
        bootstrap=(here / "gpu-install-bootstrap.sh").read_text(encoding="utf-8").rstrip("\n"),
        unit=(here / "gpu-install-finish.service").read_text(encoding="utf-8").rstrip("\n"),
    )
    size = len(text.encode())
    limit = int(data["user_data_limit"])
    if size > limit:
        raise GpuInstallError(
            codes.INVALID_INPUT,
            f"the user-data is {size} bytes and {data['label']} accepts {limit}: shorten the settings file.",
        )
    notes = []
    if (
        values.get("nvidia_driver_source", "auto") != "none"
        and not values.get("nvidia_driver_branch")
        and data.get("nvswitch_types")
    ):
        notes.append(
            f"NVSwitch instance types ({', '.join(data['nvswitch_types'])}) need NVIDIA Fabric Manager of the "
            "driver's exact branch: set nvidia_driver_branch, or apply refuses them (exit 3) before any change."
        )
    return Rendered(provider, text, tuple(notes))

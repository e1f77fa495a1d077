"""`gpu-install detect --json` on real Debian hosts, before and after Debian's docker.io."""

from __future__ import annotations

import json
import re
from typing import Any

from hosts import Host

EXPECTED_OS = {
    "bookworm": {"version_id": "12", "codename": "bookworm"},
    "trixie": {"version_id": "13", "codename": "trixie"},
}


def detect(host: Host) -> tuple[int, dict[str, Any]]:
    proc = host.run(["gpu-install", "detect", "--json"], check=False)
    assert proc.stdout.strip(), f"no JSON on stdout (exit {proc.returncode}); stderr:\n{proc.stderr}"
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:  # pragma: no cover - the message is the point
        raise AssertionError(f"stdout is not one JSON object: {exc}\n{proc.stdout}\n{proc.stderr}") from exc
    assert isinstance(result, dict)
    return proc.returncode, result


def upstream_version(deb_version: str) -> str:
    """Debian's version of a package without epoch and Debian revision/repack suffixes."""
    version = deb_version.split(":", 1)[-1]
    return re.split(r"[+~-]", version, maxsplit=1)[0]


def apt_get(host: Host, *args: str) -> None:
    host.run(["apt-get", *args], env={"DEBIAN_FRONTEND": "noninteractive"})


def problem_codes(result: dict[str, Any]) -> set[str]:
    return {p["code"] for p in result["problems"]}


def assert_debian_host(host: Host, result: dict[str, Any]) -> None:
    assert result["schema"] == 1
    arch = host.run(["uname", "-m"]).stdout.strip()
    os_ = result["os"]
    assert os_["id"] == "debian"
    assert os_["version_id"] == EXPECTED_OS[host.suite]["version_id"]
    assert os_["codename"] == EXPECTED_OS[host.suite]["codename"]
    assert os_["family"] == "debian"
    assert os_["arch"] == arch
    assert os_["supported"] is True
    assert result["gpus"] == []
    assert "no_gpu" in problem_codes(result)
    no_gpu = next(p for p in result["problems"] if p["code"] == "no_gpu")
    assert no_gpu["refuses"] is False
    assert result["supported"] is True


def test_detect_reports_debian_without_docker(debian_host: Host) -> None:
    code, result = detect(debian_host)
    assert code == 0, result
    assert_debian_host(debian_host, result)
    assert result["docker"]["flavour"] is None


def test_detect_reports_debians_docker_io_after_install(debian_host: Host) -> None:
    apt_get(debian_host, "update", "-q")
    apt_get(debian_host, "install", "-y", "-q", "docker.io")
    deb_version = debian_host.run(["dpkg-query", "-W", "-f", "${Version}", "docker.io"]).stdout

    code, result = detect(debian_host)

    assert code == 0, result
    assert_debian_host(debian_host, result)
    docker = result["docker"]
    assert docker["flavour"] == "docker.io"
    assert docker["version"] == upstream_version(deb_version)
    assert docker["config_path"] == "/etc/docker/daemon.json"


def test_detect_forgets_docker_io_once_removed_though_its_config_files_remain(bookworm_host: Host) -> None:
    apt_get(bookworm_host, "update", "-q")
    apt_get(bookworm_host, "install", "-y", "-q", "docker.io")
    assert detect(bookworm_host)[1]["docker"]["flavour"] == "docker.io"

    apt_get(bookworm_host, "remove", "-y", "-q", "docker.io")
    status = bookworm_host.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "docker.io"]).stdout
    assert status.startswith("rc"), status  # removed, config files kept

    code, result = detect(bookworm_host)
    assert code == 0, result
    assert result["docker"]["flavour"] is None


def test_upstream_version_strips_epoch_and_debian_suffixes() -> None:
    assert upstream_version("20.10.24+dfsg1-1+deb12u1+b6") == "20.10.24"
    assert upstream_version("26.1.5+dfsg1-9+b9") == "26.1.5"
    assert upstream_version("1:2.3~rc1-1") == "2.3"
    assert upstream_version("5:27.3.1-1~debian.12~bookworm") == "27.3.1"

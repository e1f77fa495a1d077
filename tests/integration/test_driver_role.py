"""The nvidia_driver role on real systemd Debian hosts.

The real driver, built by DKMS, is installed through the CLI in test_driver_apply.py. These are fast:
refusals that leave the host as it was, and the runfile path with a stand-in .run (a FIXTURE, below)
served from this machine over the Docker bridge with its SHA-256 pinned.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import roles
from hosts import Host
from roles import failure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import bridge_gateway, free_port  # noqa: E402

VENV = "/opt/gpu-install/venv"
BLACKLIST = "/etc/modprobe.d/gpu-install-blacklist-nouveau.conf"
HOLD = "/etc/apt/preferences.d/gpu-install-nvidia-driver.pref"
STAND_IN_LOG = "/var/log/gpu-install-test-stand-in-runfile.log"


def converge(host: Host, extra: dict[str, Any], check: bool = False) -> tuple[int, dict[str, int], str]:
    return roles.converge(host, "nvidia_driver", extra, check)


def dpkg_status(host: Host) -> bytes:
    return host.get("/var/lib/dpkg/status")


def mode(host: Host, path: str) -> str:
    return host.run(["stat", "-c", "%a %U %G", path]).stdout.strip()


# -- refusals before any change ---------------------------------------------------------------------


def test_source_none_without_a_loaded_driver_is_refused_naming_the_setting(bookworm_host):
    host = bookworm_host
    before = dpkg_status(host)
    rc, recap, out = converge(host, {"nvidia_driver_source": "none"})
    assert rc != 0 and recap["failed"] == 1, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 3
    assert "nvidia_driver_source: none" in error["reason"]
    assert dpkg_status(host) == before
    assert host.run(["test", "-e", BLACKLIST], check=False).returncode != 0


def test_a_custom_running_kernel_without_headers_is_refused_before_any_package_changes(bookworm_host):
    host = bookworm_host
    release = host.run(["uname", "-r"]).stdout.strip()
    if re.fullmatch(r"\d+\.\d+\.\d+(-\d+|\+deb\d+)-[a-z0-9-]+", release):
        pytest.skip(f"this machine runs a distribution kernel ({release}), not a custom one")
    before = dpkg_status(host)
    rc, _recap, out = converge(host, {"nvidia_driver_source": "distro"})
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 3, error
    assert release in error["reason"] and f"linux-headers-{release}" in error["reason"], error
    assert dpkg_status(host) == before
    assert host.run(["test", "-e", BLACKLIST], check=False).returncode != 0


# -- the runfile, checksum pinned ---------------------------------------------------------------------

# FIXTURE: a harmless script standing in for NVIDIA's .run, packed with Debian's makeself. NVIDIA's own
# makeself header hands options it does not know (--silent, --dkms, ...) to nvidia-installer; the stock
# header refuses them, so the fixture's header is the stock one with that refusal turned into a hand-over.
STAND_IN_INSTALLER = f"""#!/bin/sh
# gpu-install test fixture: stands in for nvidia-installer; records how it was called.
echo "$@" >> {STAND_IN_LOG}
"""


@contextlib.contextmanager
def serve_runfile(work: Path, installer_text: str) -> Iterator[tuple[str, str]]:
    """(url, sha256) of a stand-in .run whose nvidia-installer is installer_text, served over the Docker bridge."""
    makeself = shutil.which("makeself")
    gateway = bridge_gateway()
    if makeself is None or gateway is None:
        pytest.fail("needs makeself (Debian package) and the Docker bridge: scripts/test installs makeself")
    (work / "payload").mkdir(parents=True)
    installer = work / "payload" / "nvidia-installer"
    installer.write_text(installer_text)
    installer.chmod(0o755)
    header = Path("/usr/share/makeself/makeself-header.sh").read_text()
    refusal = re.compile(r'-\*\)\n\techo Unrecognized flag : "\\\$1" >&2\n\tMS_Help\n\texit 1\n\t;;')
    header, count = refusal.subn("-*)\n\tbreak ;;", header)
    assert count == 1, "makeself's header changed: update the fixture"
    (work / "header.sh").write_text(header)
    served = work / "www"
    served.mkdir()
    run = served / "NVIDIA-Linux-x86_64-550.163.01.run"
    subprocess.run(
        [makeself, "--quiet", "--header", str(work / "header.sh"), str(work / "payload"), str(run),
         "gpu-install test fixture: stand-in NVIDIA runfile", "./nvidia-installer"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port((gateway,))
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", gateway, "--directory", str(served), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time
        import urllib.request

        url = f"http://{gateway}:{port}/{run.name}"
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2).close()
                break
            time.sleep(0.05)
        yield url, hashlib.sha256(run.read_bytes()).hexdigest()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def stand_in_runfile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(url, sha256) of the stand-in .run, served over the Docker bridge gateway."""
    with serve_runfile(tmp_path_factory.mktemp("runfile"), STAND_IN_INSTALLER) as served:
        yield served


def test_runfile_with_the_pinned_checksum_runs_silently_with_dkms(bookworm_host, stand_in_runfile):
    host = bookworm_host
    url, sha256 = stand_in_runfile
    settings = {
        "nvidia_driver_source": "runfile",
        "nvidia_driver_runfile_url": url,
        "nvidia_driver_runfile_sha256": sha256,
        "gpu_install_image_build": True,
    }
    rc, recap, out = converge(host, settings)
    assert rc == 0, out
    calls = host.get(STAND_IN_LOG).decode().split()
    assert {"--silent", "--dkms", "--no-questions", "-m=kernel-open"} <= set(calls), calls
    assert mode(host, BLACKLIST) == "644 root root"

    rc, recap, out = converge(host, settings)
    assert rc == 0 and recap["changed"] == 0, out
    assert len(host.get(STAND_IN_LOG).decode().splitlines()) == 1, "the same runfile ran twice"


def test_runfile_with_a_wrong_checksum_is_refused_before_it_runs(bookworm_host, stand_in_runfile):
    host = bookworm_host
    url, sha256 = stand_in_runfile
    before = dpkg_status(host)
    settings = {
        "nvidia_driver_source": "runfile",
        "nvidia_driver_runfile_url": url,
        "nvidia_driver_runfile_sha256": "0" * 64,
        "gpu_install_image_build": True,
    }
    rc, _recap, out = converge(host, settings)
    assert rc != 0, out
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 5 and sha256 in error["reason"], error
    assert host.run(["test", "-e", STAND_IN_LOG], check=False).returncode != 0, "the runfile ran"
    assert dpkg_status(host) == before

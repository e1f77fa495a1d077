"""The rendered user-data under real cloud-init (Debian's package) on a real systemd Debian host.

FIXTURE: ``WheelMirror`` is an HTTP server on this machine, on the Docker bridge gateway, serving the wheel
built from this checkout and the dependency wheels of the integration hosts' wheelhouse (hosts.py): the
stand-in for an air-gapped account's package mirror (PyPI cannot be a test dependency), reached through
the same --wheel-url and --find-links a user gives. The NoCloud seed stands in for the cloud's own
datasource (the clouds cannot be reached from here); cloud-init itself, apt, pip, dockerd and systemd are
real.

The host is trixie: the run uses nvidia_container_mode: cdi (no NVIDIA repository needed), and CDI needs
Docker 25+, which bookworm's docker.io (20.10) is not. A real reboot is not possible in a container: the
exit-9 path is proved by its rendering (the unit is in the user-data and passes systemd-analyze verify in
the host) and by cloud-init's own power_state condition, not by rebooting.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hosts import VENV, Host, base_tag, host_wheelhouse, image_labels
from test_repositories import gateway

SETTINGS = (
    "gpu_install_image_build: true\nnvidia_driver_source: none\nnvidia_container_mode: cdi\ndocker_package: auto\n"
)
ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# Only NoCloud (the seed below) and no network configuration: Docker owns the host's network.
CLOUD_CFG_FIXTURE = "datasource_list: [NoCloud, None]\nnetwork:\n  config: disabled\n"


def run_generator(host: Host) -> None:
    """cloud-init's systemd generator, run directly: under `systemctl daemon-reload` in these containers it
    runs sandboxed, does not see /etc/cloud or the seed, and disables cloud-init. /run/cloud-init is emptied
    first, as a boot does (/run is a tmpfs): it holds ds-identify's cached verdict from the package's install."""
    host.run(["rm", "-rf", "/run/cloud-init"])
    host.run(["/usr/lib/systemd/system-generators/cloud-init-generator", "/run/systemd/generator",
              "/run/systemd/generator.early", "/run/systemd/generator.late"])  # fmt: skip
    host.run(["test", "-e", "/run/cloud-init/enabled"])


class WheelMirror:
    """FIXTURE: a real HTTP server (stdlib) serving a directory on the bridge gateway."""

    def __init__(self, root: Path, address: str) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer((address, 0), handler)
        self.url = f"http://{address}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WheelMirror:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def wheel_mirror(trixie_host: Host, project_wheel: Path, tmp_path: Path) -> Iterator[tuple[WheelMirror, Path]]:
    labels = image_labels(base_tag("trixie"))
    deps = host_wheelhouse(labels["gpuit.python"], labels["gpuit.machine"], labels["gpuit.glibc"])
    root = tmp_path / "www"
    (root / "wheels").mkdir(parents=True)
    for wheel in deps.glob("*.whl"):
        shutil.copy(wheel, root / "wheels" / wheel.name)
    shutil.copy(project_wheel, root / project_wheel.name)
    with WheelMirror(root, gateway(trixie_host)) as mirror:
        yield mirror, project_wheel


def test_user_data_turns_a_fresh_host_into_a_baked_image_under_real_cloud_init(trixie_host, wheel_mirror):
    host = trixie_host
    mirror, wheel = wheel_mirror
    # Rendered by the CLI of the wheel under test (which must carry templates/).
    host.put("/root/cloud-settings.yml", SETTINGS)
    host.run([
        "gpu-install", "cloud-init", "--provider", "aws", "-c", "/root/cloud-settings.yml",
        "--wheel-url", f"{mirror.url}/{wheel.name}", "--find-links", f"{mirror.url}/wheels/",
        "-o", "/root/user-data.yaml",
    ])  # fmt: skip
    user_data = host.get("/root/user-data.yaml").decode()
    assert user_data.startswith("#cloud-config\n")

    host.run(["apt-get", "update", "-q"], env=ENV)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "cloud-init"], env=ENV)
    schema = host.run(["cloud-init", "schema", "-c", "/root/user-data.yaml"], check=False)
    assert schema.returncode == 0, schema.stdout + schema.stderr

    # A fresh VM: no gpu-install, no venv, no settings (the test image carries a venv for other tests).
    host.run(["rm", "-rf", VENV, "/usr/local/bin/gpu-install", "/etc/gpu-install"])
    host.put("/var/lib/cloud/seed/nocloud/meta-data", "instance-id: gpuit-cloud-init-1\nlocal-hostname: gpu-1\n")
    host.put("/var/lib/cloud/seed/nocloud/user-data", user_data)
    host.put("/etc/cloud/cloud.cfg.d/90-gpuit-fixture.cfg", CLOUD_CFG_FIXTURE)
    # cloud-init's generator (ds-identify) decides that cloud-init runs, as at boot; then cloud-init's four
    # stages, the ExecStart lines of its units, in their order.
    run_generator(host)
    stages = (
        ["cloud-init", "init", "--local"],
        ["cloud-init", "init"],
        ["cloud-init", "modules", "--mode", "config"],
        ["cloud-init", "modules", "--mode", "final"],
    )
    outputs = []
    for stage in stages:
        proc = host.run(stage, check=False, timeout=1500)
        outputs.append(f"$ {' '.join(stage)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    transcript = "\n".join(outputs)
    log = host.run(["cat", "/var/log/gpu-install/cloud-init.log"], check=False).stdout

    status = host.run(["cloud-init", "status", "--long"], check=False)
    assert status.returncode == 0, f"{status.stdout}{status.stderr}\n{transcript}\n--- our log ---\n{log}"
    assert "status: done" in status.stdout, status.stdout

    # Installed from the local mirror only (--no-index), into a venv the user-data made.
    assert f"pip install {mirror.url}/{wheel.name}" in log, log
    assert "--no-index" in log, log
    assert host.run(["/usr/local/bin/gpu-install", "--version"]).stdout.startswith("gpu-install ")
    # apply ran in image-build mode to the end, and the marker says so.
    assert "gpu-install apply --yes -c /etc/gpu-install/image-build.yml" in log, log
    assert "Summary:" in log, log
    marker = json.loads(host.get("/var/lib/gpu-install/cloud-init.json"))
    assert marker["state"] == "image-built", marker
    assert marker["exit_code"] == 0 and marker["provider"] == "aws", marker
    # The settings the instances made from this image get: the user's, without the image-build switch.
    assert yaml.safe_load(host.get("/etc/gpu-install/config.yml")) == {
        "nvidia_driver_source": "none",
        "nvidia_container_mode": "cdi",
        "docker_package": "auto",
    }
    # What apply did is real: Docker runs with CDI enabled, and the GPU steps wait for an instance's first boot.
    daemon = json.loads(host.get("/etc/docker/daemon.json"))
    assert daemon.get("features", {}).get("cdi") is True, daemon
    assert host.run(["systemctl", "is-active", "docker"]).stdout.strip() == "active"
    enabled = host.run(["systemctl", "is-enabled", "gpu-install-finish.service"], check=False).stdout.strip()
    assert enabled == "enabled"
    # The finish unit is a valid unit for systemd, and knows it runs on the image builder itself.
    verify = host.run(["systemd-analyze", "verify", "/etc/systemd/system/gpu-install-finish.service"], check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    finish = host.run(["/usr/local/sbin/gpu-install-bootstrap", "finish"], check=False)
    assert finish.returncode == 0, finish.stdout + finish.stderr
    assert "image builder itself" in finish.stdout
    # cloud-init's per-boot report passes at later boots (nothing failed).
    report = host.run(["/var/lib/cloud/scripts/per-boot/gpu-install-report"], check=False)
    assert report.returncode == 0, report.stdout + report.stderr


def test_a_failed_run_leaves_a_failed_marker_and_fails_cloud_init(trixie_host, wheel_mirror):
    """An unreachable package source (--index-url to a port where nothing listens) fails the install, the
    marker says failed with pip's exit class (5), and cloud-init's status is an error."""
    host = trixie_host
    mirror, wheel = wheel_mirror
    host.put("/root/cloud-settings.yml", SETTINGS)
    host.run([
        "gpu-install", "cloud-init", "--provider", "gcp", "-c", "/root/cloud-settings.yml",
        "--index-url", f"{mirror.url}/no-such-index/", "-o", "/root/user-data.yaml",
    ])  # fmt: skip
    host.run(["apt-get", "update", "-q"], env=ENV)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "cloud-init"], env=ENV)
    host.run(["rm", "-rf", VENV, "/usr/local/bin/gpu-install", "/etc/gpu-install"])
    host.put("/var/lib/cloud/seed/nocloud/meta-data", "instance-id: gpuit-cloud-init-2\n")
    host.put("/var/lib/cloud/seed/nocloud/user-data", host.get("/root/user-data.yaml"))
    host.put("/etc/cloud/cloud.cfg.d/90-gpuit-fixture.cfg", CLOUD_CFG_FIXTURE)
    run_generator(host)
    for stage in (["init", "--local"], ["init"], ["modules", "--mode", "config"], ["modules", "--mode", "final"]):
        host.run(["cloud-init", *stage], check=False, timeout=1500)
    status = host.run(["cloud-init", "status", "--long"], check=False)
    assert status.returncode != 0, status.stdout
    assert "status: error" in status.stdout, status.stdout
    marker = json.loads(host.get("/var/lib/gpu-install/cloud-init.json"))
    assert marker["state"] == "failed" and marker["exit_code"] == 5, marker
    assert "pip could not install gpu-install==" in marker["reason"], marker
    log = host.get("/var/log/gpu-install/cloud-init.log").decode()
    assert "FAILED: pip could not install" in log, log
    # The per-boot report keeps the failure visible at every later boot.
    report = host.run(["/var/lib/cloud/scripts/per-boot/gpu-install-report"], check=False)
    assert report.returncode != 0 and "gpu-install failed" in report.stderr, report.stdout + report.stderr

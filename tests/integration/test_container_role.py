"""The nvidia_container role on real systemd Debian hosts, through `gpu-install apply` and on its own.

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's container toolkit repository (unreachable from
here), signed with a key made by the test and reached through gpu_install_repositories, as a user's mirror
is. Its toolkit is NVIDIA's real one, built from NVIDIA's source of v1.20.0 and packaged as NVIDIA packages
it (tests/fixtures/toolkit.py), so containers run through NVIDIA's real nvidia-container-runtime; only
libnvidia-container (nvidia-container-cli, a separate C project) is a stand-in. There is no GPU here:
applies run as image builds (gpu_install_image_build: true), which
install and configure everything and leave the spec to the boot-time unit; the /dev/char links are proved
on device nodes the test makes with mknod (FIXTURE nodes with the NVIDIA majors, no driver behind them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import roles
from hosts import Host
from roles import failure
from test_docker_ce_mirror import apply
from test_docker_role import info, tiny_image
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import TOOLKIT_VERSIONS, Mirror  # noqa: E402

# The runtime's own log, switched on in the test host as NVIDIA's config.toml documents ([nvidia-container-runtime]
# debug), to show that NVIDIA's runtime, not runc alone, ran the container.
RUNTIME_LOG = "/var/log/nvidia-container-runtime.log"

# NVIDIA's runtime (jit-cdi mode) asked for GPUs on a host without the driver's libraries; Docker wraps it as
# "OCI runtime create failed: could not apply required modification to OCI specification: error modifying OCI
# spec: failed to create the automatic CDI modifier: failed to generate CDI spec for mode "auto": failed to
# construct device spec generators: failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND: unknown."
NO_GPU_ERROR = ("failed to create the automatic CDI modifier", "failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND")
REFRESH_UNIT = "/etc/systemd/system/gpu-install-cdi-refresh.service"
UDEV_RULE = "/etc/udev/rules.d/71-nvidia-dev-char.rules"


def installed_version(host: Host, package: str) -> str | None:
    proc = host.run(["dpkg-query", "-W", "-f", "${Version}", package], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def log_runtime_calls(host: Host) -> None:
    """Switch on the runtime's log: the [nvidia-container-runtime] debug line NVIDIA's config.toml has commented."""
    path = "/etc/nvidia-container-runtime/config.toml"
    config = host.get(path).decode()
    commented = f'#debug = "{RUNTIME_LOG}"'
    assert commented in config, config
    host.put(path, config.replace(commented, commented[1:]))


def test_runtime_mode_installs_the_pinned_toolkit_and_docker_runs_containers_through_nvidias_runtime(
    debian_host, tmp_path
):
    host = debian_host
    gw = gateway(host)
    pinned = TOOLKIT_VERSIONS[0]
    assert pinned != TOOLKIT_VERSIONS[-1], "the mirror must offer a newer version than the pin"
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "none",
            "nvidia_container_toolkit_version": pinned,
            "nvidia_container_swarm_resources": True,
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        rc, result = apply(host, settings)
        assert rc == 0, result["error"]["reason"]
        for package in ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container1"):
            assert installed_version(host, package) == pinned, package
        sources = host.get("/etc/apt/sources.list.d/gpu-install-nvidia_container_toolkit.sources").decode()
        assert f"http://{gw}:{mirror.port}/nvidia_container_toolkit/stable/deb/amd64/" in sources
        ctk = host.run(["nvidia-ctk", "--version"]).stdout
        assert "NVIDIA Container Toolkit CLI version 1.20.0" in ctk, ctk

        docker = info(host)
        assert docker["DefaultRuntime"] == "nvidia"
        config = json.loads(host.get("/etc/docker/daemon.json"))
        assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"

        # A container that asks for no GPU passes through NVIDIA's runtime to runc.
        log_runtime_calls(host)
        image = tiny_image(host)
        run = host.run(["docker", "run", "--rm", "--network", "none", image, "/bin/sh", "-c", "echo through"])
        assert run.stdout.strip() == "through"
        calls = host.get(RUNTIME_LOG).decode()
        assert "Auto-detected mode as 'jit-cdi'" in calls and "Using OCI specification file path" in calls, calls

        # One that asks for every GPU reaches NVIDIA's runtime, which refuses it on this GPU-less host.
        gpu = host.run(
            ["docker", "run", "--rm", "--network", "none", "-e", "NVIDIA_VISIBLE_DEVICES=all", image, "/bin/sh", "-c",
             "true"],
            check=False,
        )  # fmt: skip
        assert gpu.returncode != 0, gpu.stdout
        assert all(part in gpu.stderr for part in NO_GPU_ERROR), gpu.stderr

        toolkit_config = host.get("/etc/nvidia-container-runtime/config.toml").decode()
        assert 'swarm-resource = "DOCKER_RESOURCE_GPU"' in toolkit_config.splitlines()
        assert "create-dev-char-symlinks --create-all" in host.get(UDEV_RULE).decode()
        # The spec is the toolkit's, kept by the nvidia-cdi-refresh units its package installs
        # (packaging/debian/nvidia-container-toolkit-base.install), not by a unit of gpu-install's.
        for unit in ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service"):
            assert host.run(["systemctl", "is-enabled", unit], check=False).stdout.strip() == "enabled", unit
        assert host.run(["test", "-e", REFRESH_UNIT], check=False).returncode != 0

        rc, again = apply(host, settings)
        assert rc == 0 and again["changed"] == 0, again["changes"]
        assert installed_version(host, "nvidia-container-toolkit") == pinned


def test_cdi_mode_uses_no_nvidia_repository_and_refreshes_the_spec_at_boot_with_gpu_install(trixie_host):
    host = trixie_host
    settings = {"gpu_install_image_build": True, "nvidia_driver_source": "none", "nvidia_container_mode": "cdi"}
    rc, result = apply(host, settings)
    assert rc == 0, result["error"]["reason"]
    listing = host.run(["ls", "/etc/apt/sources.list.d"]).stdout
    assert "nvidia_container_toolkit" not in listing and "cuda" not in listing, listing
    assert installed_version(host, "nvidia-container-toolkit") is None

    config = json.loads(host.get("/etc/docker/daemon.json"))
    assert config.get("features", {}).get("cdi") is True  # Docker 26 reads CDI specs with features.cdi
    assert "nvidia" not in config.get("runtimes", {}) and "default-runtime" not in config
    unit = host.get(REFRESH_UNIT).decode()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert "-m gpu_install cdi --quiet --output=/etc/cdi/gpu-install-nvidia.json" in exec_start
    assert "--capabilities=compute,utility" in exec_start
    assert host.run(["systemctl", "is-enabled", "gpu-install-cdi-refresh.service"]).stdout.strip() == "enabled"
    # The unit's command is a real one: here it fails only for want of a GPU, with the CLI's exit code 3.
    argv = exec_start.removeprefix("ExecStart=").split() + ["--check"]
    proc = host.run(argv, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "GPU" in proc.stderr, proc.stderr


def make_fixture_nodes(host: Host) -> None:
    """FIXTURE device nodes with the NVIDIA driver's majors (195, and nvidia-uvm's dynamic one)."""
    for name, major, minor in (("nvidia0", 195, 0), ("nvidiactl", 195, 255), ("nvidia-uvm", 237, 0)):
        host.run(["mknod", "-m", "666", f"/dev/{name}", "c", str(major), str(minor)])


def test_device_nodes_get_their_dev_char_links_once(bookworm_host):
    host = bookworm_host
    make_fixture_nodes(host)
    host.run(["rm", "-f", "/dev/char/195:0", "/dev/char/195:255", "/dev/char/237:0"])
    extra = {"nvidia_container_mode": "cdi"}
    rc, recap, out = roles.converge(host, "nvidia_container", extra, check=True)
    assert rc == 0, out
    assert host.run(["test", "-e", "/dev/char/195:0"], check=False).returncode != 0, "check mode made a link"

    rc, recap, out = roles.converge(host, "nvidia_container", extra)
    assert rc == 0, out
    for link, target in (("195:0", "../nvidia0"), ("195:255", "../nvidiactl"), ("237:0", "../nvidia-uvm")):
        assert host.run(["readlink", f"/dev/char/{link}"]).stdout.strip() == target
    # Without gpu-install on the host (a fleet host), CDI mode has no boot-time refresh, and says so.
    assert host.run(["test", "-e", REFRESH_UNIT], check=False).returncode != 0
    assert "gpu-install is not installed on this host" in out

    rc, recap, out = roles.converge(host, "nvidia_container", extra)
    assert rc == 0 and recap["changed"] == 0, out


def test_cdi_mode_beside_the_toolkits_own_spec_is_refused_before_any_change(bookworm_host):
    host = bookworm_host
    make_fixture_nodes(host)
    host.run(["rm", "-f", "/dev/char/195:0"])
    host.run(["mkdir", "-p", "/etc/cdi"])
    host.put("/etc/cdi/nvidia.yaml", b"---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    rc, _recap, out = roles.converge(host, "nvidia_container", {"nvidia_container_mode": "cdi"})
    assert rc != 0
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 3
    assert "/etc/cdi/nvidia.yaml" in error["reason"] and "nvidia_container_mode: runtime" in error["reason"]
    assert host.run(["test", "-e", "/dev/char/195:0"], check=False).returncode != 0


def test_swarm_resources_in_cdi_mode_are_refused(bookworm_host):
    extra = {"nvidia_container_mode": "cdi", "nvidia_container_swarm_resources": True}
    rc, _recap, out = roles.converge(bookworm_host, "nvidia_container", extra)
    assert rc != 0
    error = failure(out)["gpu_install_error"]
    assert error["code"] == 3 and "nvidia_container_swarm_resources" in error["reason"]

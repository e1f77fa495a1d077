"""`gpu-install apply` with Debian's own driver on a bookworm host: DKMS really builds it; `remove --driver`
takes it all back.

Debian 12's nvidia-driver (535, about 360 MB through the package cache) is installed in an image build
with the headers of Debian's kernel (linux-headers-amd64): the hosts run this machine's kernel, which
has no headers, so DKMS builds the module for Debian's kernel, for real. NVIDIA's container toolkit
repository comes from the signed local mirror (a FIXTURE standing in for NVIDIA's, which cannot be
reached from here), reached through gpu_install_repositories as a user's mirror is.

The host starts as a Debian host booted from Debian's kernel does: linux-image-amd64 with its initramfs
(initramfs-tools), and Docker (docker.io) already there (``LAYER``, a prepared image). So the initramfs that
apply rebuilds holds gpu-install's nouveau blacklist, and the one remove --driver rebuilds no longer does.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import Host, HostFactory, ensure_layer, log
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402
from fixtures.snapshot import diff, render, snapshot, without  # noqa: E402

HOLD = "/etc/apt/preferences.d/gpu-install-nvidia-driver.pref"
BLACKLIST = "/etc/modprobe.d/gpu-install-blacklist-nouveau.conf"
STATE_DIR = "/var/lib/gpu-install"
# Debian's kernel (its postinst builds the initramfs with initramfs-tools) and Debian's Docker, as a Debian host
# has them before gpu-install comes.
LAYER = (
    "apt-get update -q\n"
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-amd64 docker.io\n"
)
# Debian's nvidia-persistenced adds the system account its daemon runs as (nvpd) and, as Debian's packages do,
# leaves it when purged (files that account owned may outlive the package): the account files change by that only.
ACCOUNT_FILES = tuple(f"/etc/{name}{tail}" for name in ("passwd", "group", "shadow", "gshadow") for tail in ("", "-"))
DRIVER_ACCOUNT = "nvpd"
# The operator's drain and undrain commands: each appends its word and the host gpu-install names.
DRAIN_LOG = "/root/drain.log"
SETTINGS_FILE = "/etc/gpu-install/config.yml"


@pytest.fixture
def kernel_host(host_factory: HostFactory) -> Iterator[Host]:
    host = host_factory("bookworm", image=ensure_layer("bookworm", "kernel-docker-io", LAYER))
    try:
        yield host
    finally:
        host_factory.remove(host)


def cli(host: Host, *argv: str) -> tuple[int, dict]:
    proc = host.run(["gpu-install", *argv, "--json"], check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def why(host: Host, result: dict) -> str:
    """A failed run's error and the end of its log, for an assertion message."""
    error = result.get("error") or {}
    tail = host.run(["tail", "-c", "6000", error["log"]], check=False).stdout if error.get("log") else ""
    return f"{error}\n{tail}"


def accounts(host: Host) -> dict[str, set[str]]:
    """The account and group names in /etc/passwd and /etc/group."""
    return {
        path: {line.split(":", 1)[0] for line in host.get(path).decode().splitlines() if line}
        for path in ("/etc/passwd", "/etc/group")
    }


def initramfs(host: Host) -> tuple[str, list[str]]:
    """The checksum of Debian's kernel's initramfs, and the modprobe.d files inside it."""
    image = host.run(["sh", "-c", "ls /boot/initrd.img-*"]).stdout.split()
    assert len(image) == 1, image
    digest = host.run(["sha256sum", image[0]]).stdout.split()[0]
    listed = host.run(["lsinitramfs", image[0]]).stdout.split()
    return digest, [p for p in listed if p.startswith("etc/modprobe.d/")]


def nvidia_modules(host: Host) -> list[str]:
    """DKMS's NVIDIA modules: its registered trees and the modules it installed for any kernel."""
    found = host.run(["sh", "-c", "ls -d /var/lib/dkms/nvidia* /lib/modules/*/updates/dkms/nvidia* 2>/dev/null"],
                     check=False)  # fmt: skip
    return found.stdout.split()


def test_distro_driver_is_built_by_dkms_a_second_apply_changes_nothing_and_remove_driver_takes_it_back(
    kernel_host, tmp_path
):
    host = kernel_host
    gw = gateway(host)
    before = snapshot(host)
    accounts_before = accounts(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "distro",
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        host.run(["mkdir", "-p", "/etc/gpu-install"])
        host.put(SETTINGS_FILE, json.dumps(settings).encode())

        rc, plan = cli(host, "plan")
        assert rc == 0, plan.get("error")
        listed = json.dumps(plan["changes"])
        assert re.search(r"install nvidia-driver 535\.\S+", listed), "the plan lists the driver and its version"
        assert re.search(r"install linux-headers-amd64 \S+", listed)
        assert host.run(["dpkg-query", "-W", "nvidia-driver"], check=False).returncode != 0

        rc, result = cli(host, "apply", "--yes")
        assert rc == 0, result.get("error")
        assert result["changed"] >= 4
        assert result["reboot_required"] is False  # an image build: the module loads on first boot

        kernels = host.run(["sh", "-c", "ls -d /lib/modules/*/build | cut -d/ -f4"]).stdout.split()
        debian = [k for k in kernels if re.fullmatch(r"6\.1\.\S+-amd64", k)]
        assert debian, kernels
        status = host.run(["dkms", "status"]).stdout
        assert re.search(rf"^nvidia\S*, {re.escape(debian[0])}, x86_64: installed", status, re.M), status
        built = host.run(["sh", "-c", f"ls /lib/modules/{debian[0]}/updates/dkms/"]).stdout.split()
        assert any(re.fullmatch(r"nvidia(-current)?\.ko(\.xz)?", name) for name in built), built
        assert "Pin: version 535.*" in host.get(HOLD).decode()
        info = json.loads(host.run(["docker", "info", "--format", "{{json .}}"]).stdout)
        assert info["DefaultRuntime"] == "nvidia"

        applied_initramfs = initramfs(host)
        assert "etc/modprobe.d/gpu-install-blacklist-nouveau.conf" in applied_initramfs[1], applied_initramfs

        status_before = host.get("/var/lib/dpkg/status")
        rc, again = cli(host, "apply", "--yes")
        assert rc == 0 and again["changed"] == 0, again["changes"]
        assert host.get("/var/lib/dpkg/status") == status_before

        # remove --driver, inside the operator's drain and undrain commands.
        began = time.monotonic()
        recorder = f'echo "{{word}} $GPU_INSTALL_HOST" >> {DRAIN_LOG}'
        settings["gpu_install_drain_command"] = recorder.format(word="drain")
        settings["gpu_install_undrain_command"] = recorder.format(word="undrain")
        host.put(SETTINGS_FILE, json.dumps(settings).encode())
        recorded = json.loads(host.get(f"{STATE_DIR}/packages.json"))["packages"]
        driver_packages = sorted(name for name, entry in recorded.items() if entry["group"] == "driver")
        assert {"nvidia-driver", "nvidia-kernel-dkms", "dkms", "linux-headers-amd64"} <= set(driver_packages)

        rc, checked = cli(host, "remove", "--driver", "--check")
        assert rc == 0, why(host, checked)
        plan = checked["removal"]["plan"]
        planned = {(i["kind"], i["target"], i["action"]) for i in plan}
        assert {("package", name, "purge") for name in driver_packages} <= planned, plan
        assert {("file", BLACKLIST, "remove"), ("hold", HOLD, "remove"), ("driver", "initramfs", "rebuild")} <= planned
        assert host.get("/var/lib/dpkg/status") == status_before, "remove --check changed packages"
        assert host.run(["test", "-e", DRAIN_LOG], check=False).returncode != 0, "remove --check ran the drain"

        rc, removed = cli(host, "remove", "--driver", "--yes")
        # 0, not 9: no NVIDIA module runs in this kernel (an image build), so no reboot is needed to unload it.
        assert rc == 0, why(host, removed)
        assert removed["reboot_required"] is False
        done = {(i["kind"], i["target"], i["action"]) for i in removed["removal"]["done"]}
        assert done == planned, f"planned, not done: {planned - done}; done, not planned: {done - planned}"
        log(f"remove --driver took {time.monotonic() - began:.0f} s")

        # The drain ran before anything went, the undrain after, both naming the host; the node is back.
        assert host.get(DRAIN_LOG).decode().splitlines() == ["drain localhost", "undrain localhost"]
        # The DKMS module is gone, with every package gpu-install installed for the driver; the kernel stays.
        assert nvidia_modules(host) == []
        installed = set(snapshot(host)["packages"])
        assert not (set(driver_packages) & installed), set(driver_packages) & installed
        assert "linux-image-amd64" in installed and "docker.io" in installed
        # The initramfs was rebuilt without the blacklist.
        removed_initramfs = initramfs(host)
        assert removed_initramfs[0] != applied_initramfs[0]
        assert not [p for p in removed_initramfs[1] if "gpu-install" in p], removed_initramfs
        # The host is as it was before apply: packages, /etc, unit states, no gpu-install state; the settings file
        # the test wrote stays. Two differences are not gpu-install's to take back, each checked for what it is:
        # the driver's account (ACCOUNT_FILES), and libraries apt upgraded because a package apply installed needed
        # their newer version (removal takes back packages, and never downgrades one the host had).
        d = without(diff(before, snapshot(host)), "files", "added", "/etc/gpu-install", SETTINGS_FILE)
        added = {path: names - accounts_before[path] for path, names in accounts(host).items()}
        assert added == {"/etc/passwd": {DRIVER_ACCOUNT}, "/etc/group": {DRIVER_ACCOUNT}}, added
        assert all(accounts_before[path] <= names for path, names in accounts(host).items())
        d = without(d, "files", "changed", *ACCOUNT_FILES)
        upgraded = d.get("packages", {}).get("changed", {})
        for name, (old, new) in upgraded.items():
            newer = host.run(["dpkg", "--compare-versions", new, "gt", old], check=False).returncode == 0
            assert newer, (name, old, new)
        d = without(d, "packages", "changed", *upgraded)
        assert not d, "remove --driver left the host unlike before apply:\n" + render(d)

        # A second remove --driver finds nothing, drains nothing and changes nothing.
        status_removed = host.get("/var/lib/dpkg/status")
        rc, again = cli(host, "remove", "--driver", "--yes")
        assert rc == 0, why(host, again)
        assert again["removal"]["plan"] == [] and again["removal"]["done"] == [] and again["changed"] == 0, again
        assert host.get("/var/lib/dpkg/status") == status_removed
        assert host.get(DRAIN_LOG).decode().splitlines() == ["drain localhost", "undrain localhost"]
        assert initramfs(host)[0] == removed_initramfs[0]
        log(f"remove --driver, both runs, took {time.monotonic() - began:.0f} s")

"""`gpu-install apply` with Debian's own driver on a bookworm host: DKMS really builds it.

Debian 12's nvidia-driver (535, about 360 MB through the package cache) is installed in an image build
with the headers of Debian's kernel (linux-headers-amd64): the hosts run this machine's kernel, which
has no headers, so DKMS builds the module for Debian's kernel, for real. NVIDIA's container toolkit
repository comes from the signed local mirror (a FIXTURE standing in for NVIDIA's, which cannot be
reached from here), reached through gpu_install_repositories as a user's mirror is.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from hosts import Host
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402

HOLD = "/etc/apt/preferences.d/gpu-install-nvidia-driver.pref"


def cli(host: Host, *argv: str) -> tuple[int, dict]:
    proc = host.run(["gpu-install", *argv, "--json"], check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_distro_driver_is_installed_and_built_by_dkms_and_a_second_apply_changes_nothing(bookworm_host, tmp_path):
    host = bookworm_host
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        settings = {
            "gpu_install_image_build": True,
            "nvidia_driver_source": "distro",
            "gpu_install_repositories": mirror.repositories(gw, ids=("nvidia_container_toolkit",)),
        }
        host.run(["mkdir", "-p", "/etc/gpu-install"])
        host.put("/etc/gpu-install/config.yml", json.dumps(settings).encode())

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

        status_before = host.get("/var/lib/dpkg/status")
        rc, again = cli(host, "apply", "--yes")
        assert rc == 0 and again["changed"] == 0, again["changes"]
        assert host.get("/var/lib/dpkg/status") == status_before

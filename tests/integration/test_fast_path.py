"""The fast path: apply on a host that is as the last successful full run left it skips the roles, and any
drift that could matter (an edited daemon.json, a stopped Docker, another package set, other settings, --full)
runs them again, on a real systemd trixie host through the CLI.

The settings are a GPU-less apply that needs no vendor repository: an image build, no driver, the container
runtime in CDI mode (Debian's docker.io through apt-cacher-ng).
"""

from __future__ import annotations

import json

from hosts import Host

SETTINGS = {"gpu_install_image_build": True, "nvidia_driver_source": "none", "nvidia_container_mode": "cdi"}
RECEIPT = "/var/lib/gpu-install/converged.json"
# A package of no consequence, built in the host: installing it changes only dpkg's database.
DUMMY_CONTROL = "Package: gpu-install-test-dummy\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: d\n"


def apply(host: Host, *argv: str, expect_rc: int = 0) -> dict:
    proc = host.run(["gpu-install", "apply", "--yes", "--json", *argv], check=False)
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout)
    assert proc.returncode == expect_rc, result.get("error")
    return result


def plan(host: Host) -> dict:
    proc = host.run(["gpu-install", "plan", "--json"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def put_settings(host: Host, settings: dict) -> None:
    host.run(["mkdir", "-p", "/etc/gpu-install"])
    host.put("/etc/gpu-install/config.yml", json.dumps(settings))


def assert_full_run(result: dict, cause: str) -> None:
    fast = result["fast_path"]
    assert fast["converged"] is False, fast
    assert any(cause in d for d in fast["drift"]), fast["drift"]


def assert_fast_run(result: dict) -> None:
    assert result["fast_path"]["converged"] is True, result["fast_path"]
    assert result["fast_path"]["drift"] == []
    assert result["changed"] == 0, result["changes"]


def test_a_converged_host_skips_the_roles_until_something_they_depend_on_changes(trixie_host):
    host = trixie_host
    put_settings(host, SETTINGS)
    first = apply(host)
    assert_full_run(first, "no earlier run left the host converged")
    assert first["changed"] > 0
    receipt = json.loads(host.get(RECEIPT))
    assert receipt["schema"] == 1 and receipt["key"]

    second = apply(host)
    assert_fast_run(second)
    assert second["fast_path"]["receipt"] == receipt["written"]
    # The fast path still reports the host it found.
    assert second["host"]["docker"]["flavour"] == "docker.io"
    assert plan(host)["fast_path"]["converged"] is True

    # An operator's edit of daemon.json: the full run puts gpu-install's keys back.
    daemon = json.loads(host.get("/etc/docker/daemon.json"))
    host.put("/etc/docker/daemon.json", json.dumps({"log-driver": "json-file"}))
    planned = plan(host)
    assert_full_run(planned, "/etc/docker")
    assert any("daemon.json" in c["task"] for c in planned["changes"]), planned["changes"]
    assert host.run(["test", "-e", RECEIPT], check=False).returncode == 0  # plan leaves the receipt alone
    fixed = apply(host)
    assert_full_run(fixed, "/etc/docker")
    assert any("daemon.json" in c["task"] for c in fixed["changes"]), fixed["changes"]
    now = json.loads(host.get("/etc/docker/daemon.json"))
    assert now["log-driver"] == "json-file"
    assert now["features"] == daemon["features"]
    assert_fast_run(apply(host))

    # Docker stopped by hand: the full run starts it again.
    host.run(["systemctl", "stop", "docker.service", "docker.socket"])
    started = apply(host)
    assert_full_run(started, "state of docker")
    assert started["changed"] > 0
    assert host.run(["systemctl", "is-active", "docker.service"]).stdout.strip() == "active"
    assert_fast_run(apply(host))

    # Another package installed: the roles check everything again and find nothing to change.
    host.run(["mkdir", "-p", "/root/dummy/DEBIAN"])
    host.put("/root/dummy/DEBIAN/control", DUMMY_CONTROL)
    host.run(["dpkg-deb", "-b", "/root/dummy", "/root/dummy.deb"])
    host.run(["dpkg", "-i", "/root/dummy.deb"])
    checked = apply(host)
    assert_full_run(checked, "installed packages")
    assert checked["changed"] == 0, checked["changes"]
    assert_fast_run(apply(host))

    # --full runs the roles whatever the receipt says, and leaves a new one.
    full = apply(host, "--full")
    assert_full_run(full, "fast path turned off")
    assert full["changed"] == 0, full["changes"]
    assert_fast_run(apply(host))

    # Another setting: a full run that applies it.
    put_settings(host, {**SETTINGS, "nvidia_container_driver_capabilities": "compute,utility,video"})
    changed = apply(host)
    assert_full_run(changed, "the settings or gpu-install itself changed")
    assert changed["changed"] > 0
    assert_fast_run(apply(host))


def test_a_failed_run_leaves_no_receipt_and_the_next_run_is_a_full_one(trixie_host):
    host = trixie_host
    put_settings(host, SETTINGS)
    apply(host)
    assert_fast_run(apply(host))
    # A malformed daemon.json: exit 4, the file kept as it is, the receipt gone.
    broken = b'{\n  "log-driver": "json-file",\n}\n'
    host.put("/etc/docker/daemon.json", broken)
    failed = apply(host, expect_rc=4)
    assert "daemon.json" in failed["error"]["reason"]
    assert host.get("/etc/docker/daemon.json") == broken
    assert host.run(["test", "-e", RECEIPT], check=False).returncode == 1
    # Once the file is fixed, a full run (there is no receipt to compare with), then the fast path again.
    host.put("/etc/docker/daemon.json", b'{"log-driver": "json-file"}\n')
    again = apply(host)
    assert_full_run(again, "no earlier run left the host converged")
    assert_fast_run(apply(host))

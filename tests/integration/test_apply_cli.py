"""`gpu-install plan` and `apply` through the CLI on real bookworm hosts, NVIDIA's repositories unreachable."""

from __future__ import annotations

import json

from hosts import Host

IMAGE_BUILD = b"gpu_install_image_build: true\n"


def snapshot(host: Host) -> str:
    """What a failed run must leave exactly as it was."""
    return host.run(
        ["sh", "-c", "find /etc/apt /etc/docker -type f -exec sha256sum {} + 2>/dev/null | sort; "
         "sha256sum /var/lib/dpkg/status"]
    ).stdout  # fmt: skip


def cli(host: Host, *argv: str, user: str | None = None) -> tuple[int, dict]:
    command = ["gpu-install", *argv]
    if user:
        command = ["runuser", "-u", user, "--", "env", "HOME=/tmp", *command]
    proc = host.run(command, check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_apply_with_default_sources_unreachable_exits_5_before_any_change(bookworm_host):
    host = bookworm_host
    host.put("/etc/gpu-install/config.yml", IMAGE_BUILD)
    before = snapshot(host)
    rc, result = cli(host, "apply", "--yes", "--json")
    assert rc == 5, result
    assert result["schema"] == 1
    assert result["error"]["code"] == 5
    assert "cuda repository" in result["error"]["reason"]
    assert result["changed"] == 0
    assert snapshot(host) == before
    assert host.run(["apt-get", "update", "-q"], check=False).returncode == 0


def test_plan_runs_unprivileged_shows_the_changes_and_marks_the_unreachable_source(bookworm_host):
    host = bookworm_host
    host.put("/etc/gpu-install/config.yml", IMAGE_BUILD)
    before = snapshot(host)
    rc, result = cli(host, "plan", "--json", user="nobody")
    assert rc == 5, result.get("error")
    codes = [b["code"] for b in result["blockers"]]
    assert codes and set(codes) == {5}
    tasks = [c["task"] for c in result["changes"]]
    assert any("Install Docker" in t for t in tasks), tasks
    assert any("daemon.json" in t for t in tasks), tasks
    assert snapshot(host) == before


def test_apply_and_verify_refuse_to_run_without_root(bookworm_host):
    host = bookworm_host
    for command in ("apply", "verify"):
        rc, result = (
            cli(host, command, "--yes", "--json", user="nobody")
            if command == "apply"
            else cli(host, command, "--json", user="nobody")
        )
        assert rc == 10, result
        assert "root" in result["error"]["reason"]


def test_no_gpu_outside_image_builds_is_refused_with_exit_3(bookworm_host):
    host = bookworm_host
    before = snapshot(host)
    rc, result = cli(host, "apply", "--yes", "--json")
    assert rc == 3, result
    assert "No NVIDIA GPU" in result["error"]["reason"]
    assert snapshot(host) == before


def test_a_docker_refusal_comes_before_the_driver_is_installed(bookworm_host):
    """Every role's preflight runs before the first change: a dockerd flag conflict stops the run while the
    host is as it was, although the driver (Debian's, 'distro') would have been installed first."""
    host = bookworm_host
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    host.run(["apt-get", "update", "-q"], env=env)
    host.run(["apt-get", "install", "-y", "-q", "docker.io"], env=env)
    host.run(["mkdir", "-p", "/etc/systemd/system/docker.service.d"])
    host.put(
        "/etc/systemd/system/docker.service.d/10-runtime.conf",
        b"[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// --default-runtime=runc\n",
    )
    host.run(["systemctl", "daemon-reload"])
    host.put("/etc/gpu-install/config.yml", IMAGE_BUILD + b"nvidia_driver_source: distro\n")
    before = snapshot(host)
    rc, result = cli(host, "apply", "--yes", "--json")
    assert rc == 4, result
    assert "10-runtime.conf line 3" in result["error"]["reason"]
    assert result["changed"] == 0
    assert snapshot(host) == before

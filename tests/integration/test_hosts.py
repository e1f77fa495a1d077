"""The test hosts themselves: what every other integration test relies on."""

from __future__ import annotations

import subprocess

import pytest
from hosts import Host, SshKey


def test_host_boots_systemd_to_running(debian_host: Host) -> None:
    state = debian_host.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state == "running", debian_host.run(["systemctl", "--failed"], check=False).stdout
    assert debian_host.run(["readlink", "/proc/1/exe"]).stdout.strip().endswith("/systemd")


def test_cli_runs_through_the_symlink_in_usr_local_bin(debian_host: Host) -> None:
    link = debian_host.run(["readlink", "/usr/local/bin/gpu-install"]).stdout.strip()
    assert link == "/opt/gpu-install/venv/bin/gpu-install"
    proc = debian_host.run(["gpu-install", "--help"])
    assert "detect" in proc.stdout


def test_put_and_get_round_trip_bytes_with_mode(bookworm_host: Host) -> None:
    payload = bytes(range(256)) * 3
    bookworm_host.put("/etc/gpuit/sub/blob.bin", payload, 0o600)
    assert bookworm_host.get("/etc/gpuit/sub/blob.bin") == payload
    assert bookworm_host.run(["stat", "-c", "%a %U", "/etc/gpuit/sub/blob.bin"]).stdout.split() == ["600", "root"]


def test_run_passes_argv_verbatim_and_env(bookworm_host: Host) -> None:
    proc = bookworm_host.run(["printf", "%s|", "a b", "$HOME", "*"], env={"GPUIT_X": "1"})
    assert proc.stdout == "a b|$HOME|*|"
    assert bookworm_host.run(["sh", "-c", "echo $GPUIT_X"], env={"GPUIT_X": "yes"}).stdout == "yes\n"
    assert bookworm_host.run(["cat"], input="from stdin").stdout == "from stdin"


def test_run_raises_with_output_when_check_fails(bookworm_host: Host) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        bookworm_host.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert info.value.returncode == 7
    assert "err" in str(info.value)
    assert bookworm_host.run(["false"], check=False).returncode == 1
    with pytest.raises(TypeError):
        bookworm_host.run("true")


def test_apt_reaches_debian_through_the_cache(trixie_host: Host) -> None:
    proxy = trixie_host.get("/etc/apt/apt.conf.d/01gpuit-proxy").decode()
    assert ":3142" in proxy
    trixie_host.run(["apt-get", "update", "-q"])
    policy = trixie_host.run(["apt-cache", "policy", "nvidia-driver"]).stdout
    assert "non-free" in policy


def test_host_accepts_ssh_from_this_machine(bookworm_host: Host, ssh_key: SshKey) -> None:
    bookworm_host.authorize_ssh_key(ssh_key.public)
    proc = subprocess.run(
        ssh_key.argv(bookworm_host, "cat", "/etc/debian_version"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("12.")


def test_hosts_are_removed_with_their_docker_volume(host_factory, trixie_host: Host) -> None:
    extra = host_factory("bookworm")
    name = extra.name
    host_factory.remove(extra)
    listed = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    volumes = subprocess.run(
        ["docker", "volume", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert name not in listed
    assert f"{name}-docker" not in volumes
    assert trixie_host.name in listed


def test_host_runs_its_own_dockerd_from_debians_package(debian_host: Host) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    debian_host.run(["apt-get", "update", "-q"], env=env)
    debian_host.run(["apt-get", "install", "-y", "-q", "docker.io"], env=env)
    assert debian_host.run(["systemctl", "is-active", "docker"], check=False).stdout.strip() == "active"
    info = debian_host.run(["docker", "info", "--format", "{{.ServerVersion}} {{.Driver}}"]).stdout.split()
    assert info[1] in {"overlay2", "vfs", "overlayfs"}, info
    # SIGHUP reaches dockerd's main PID the way the docker role reloads it.
    debian_host.run(["systemctl", "kill", "--kill-whom=main", "--signal=HUP", "docker"])
    debian_host.run(["docker", "info", "--format", "{{.ServerVersion}}"])

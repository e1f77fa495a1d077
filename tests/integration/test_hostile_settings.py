"""Hostile settings through `gpu-install plan -c FILE` and `apply` on real bookworm hosts: nothing reaches a shell.

The sentinel is /tmp/pwned on the host: every hostile string below tries to create it (command substitution,
backquotes, `;`, `|`, an apt.conf option that runs a command, an Ansible lookup('pipe')), and it must never
appear.

FIXTURE: tests/fixtures/mirror.py stands in for NVIDIA's repositories (unreachable from here), signed with a
key made by the test and reached through gpu_install_repositories, as a user's mirror is; its toolkit packages
are stand-ins. There is no GPU here: applies run as image builds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from hosts import Host
from test_apply_cli import snapshot
from test_repositories import gateway

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Mirror  # noqa: E402

SENTINEL = "/tmp/pwned"
CONFIG = "/etc/gpu-install/hostile.yml"  # readable by the unprivileged plan
BASE = {"gpu_install_image_build": True, "nvidia_driver_source": "none"}

REFUSED = [
    ("gpu_install_proxy", 'http://p:3128";APT::Update::Pre-Invoke{"touch/tmp/pwned";};x"'),
    ("gpu_install_proxy", "{{ lookup('pipe', 'touch /tmp/pwned') }}"),
    ("gpu_install_drain_command", "{{ lookup('pipe', 'touch /tmp/pwned') }}"),
    ("gpu_install_drain_command", "true\ntouch /tmp/pwned"),
    ("nvidia_driver_branch", "$(touch /tmp/pwned)"),
    ("nvidia_container_toolkit_version", "1.0`touch /tmp/pwned`"),
    ("gpu_verify_image", "--privileged"),
    ("docker_runtime_path", "../../../tmp/pwned"),
    ("nvidia_driver_runfile_url", "http://x/a.run; touch /tmp/pwned"),
    ("gpu_install_report_dir", "x\x00y"),
]
# Allowed where a setting is a command or a controller-side path by design: kept as data, never run here.
HOSTILE_BUT_VALID = {
    "gpu_install_drain_command": "echo $(touch /tmp/pwned) `touch /tmp/pwned`; touch /tmp/pwned | cat",
    "gpu_install_undrain_command": "touch /tmp/pwned && touch /tmp/pwned || touch /tmp/pwned",
    "gpu_install_report_dir": "../../tmp/$(touch /tmp/pwned)/`touch /tmp/pwned`;report",
}


def gpu_install(host: Host, *argv: str, user: str | None = None) -> tuple[int, dict]:
    command = ["gpu-install", *argv]
    if user:
        command = ["runuser", "-u", user, "--", "env", "HOME=/tmp", *command]
    proc = host.run(command, check=False)
    assert proc.stdout.strip(), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def pwned(host: Host) -> bool:
    return host.run(["test", "-e", SENTINEL], check=False).returncode == 0


def test_hostile_settings_are_refused_with_exit_4_before_anything_runs(bookworm_host):
    host = bookworm_host
    before = snapshot(host)
    for name, value in REFUSED:
        host.put(CONFIG, yaml.safe_dump({**BASE, name: value}).encode())
        for user in (None, "nobody"):
            rc, result = gpu_install(host, "plan", "--json", "-c", CONFIG, user=user)
            assert rc == 4, (name, value, result)
            assert name in result["error"]["reason"]
        rc, result = gpu_install(host, "apply", "--yes", "--json", "-c", CONFIG)
        assert rc == 4, (name, value, result)
        assert name in result["error"]["reason"]
        assert result.get("changed", 0) == 0
    host.put(CONFIG, b"gpu_install_image_build: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    rc, result = gpu_install(host, "apply", "--yes", "--json", "-c", CONFIG)
    assert rc == 4 and "not valid YAML" in result["error"]["reason"], result
    assert not pwned(host)
    assert snapshot(host) == before


@pytest.mark.parametrize("flavour", ["runtime"])
def test_hostile_but_valid_commands_and_paths_are_carried_as_data_through_plan_and_apply(
    bookworm_host, tmp_path, flavour
):
    host = bookworm_host
    gw = gateway(host)
    with Mirror(tmp_path / "mirror", addresses=("127.0.0.1", gw)) as mirror:
        config = {
            **BASE,
            **HOSTILE_BUT_VALID,
            "nvidia_container_mode": flavour,
            "gpu_install_repositories": mirror.repositories(gw, ids=("cuda", "nvidia_container_toolkit")),
        }
        host.put(CONFIG, yaml.safe_dump(config).encode())
        rc, plan = gpu_install(host, "plan", "--json", "-c", CONFIG)
        assert rc == 0, plan.get("error")
        assert not pwned(host)
        rc, result = gpu_install(host, "apply", "--yes", "--json", "-c", CONFIG)
        assert rc == 0, result.get("error")
        assert result["changed"] > 0
    assert not pwned(host)
    # nothing was created under a name made of the hostile strings either
    found = host.run(["find", "/", "-xdev", "-name", "*touch*", "-newer", CONFIG], check=False).stdout
    assert found.strip() == "", found

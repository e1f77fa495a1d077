"""`gpu-install apply` without --yes, on a terminal: it shows the plan, asks, and obeys the answer."""

from __future__ import annotations

import json

import pexpect
from hosts import Host

SETTINGS = b"""gpu_install_image_build: true
nvidia_driver_source: none
nvidia_container_mode: cdi
"""


def spawn_apply(host: Host) -> pexpect.spawn:
    return pexpect.spawn(
        "docker",
        ["exec", "-it", host.name, "gpu-install", "apply"],
        encoding="utf-8",
        timeout=300,
        dimensions=(50, 200),
    )


def test_apply_shows_the_plan_and_changes_nothing_when_told_no(trixie_host):
    host = trixie_host
    host.put("/etc/gpu-install/config.yml", SETTINGS)
    child = spawn_apply(host)
    child.expect("Apply these changes\\? \\[y/N\\]")
    plan = child.before
    assert "Install Docker" in plan
    assert "daemon.json" in plan
    child.sendline("n")
    child.expect("Nothing was changed.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert host.run(["dpkg-query", "-W", "docker.io"], check=False).returncode != 0


def test_apply_answered_yes_converges_and_a_second_run_changes_nothing(trixie_host):
    host = trixie_host
    host.put("/etc/gpu-install/config.yml", SETTINGS)
    child = spawn_apply(host)
    child.expect("Apply these changes\\? \\[y/N\\]")
    child.sendline("y")
    child.expect("Summary: (\\d+) changed, 0 failed")
    assert int(child.match.group(1)) >= 3
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    info = json.loads(host.run(["docker", "info", "--format", "{{json .}}"]).stdout)
    assert info["CDISpecDirs"], info
    again = host.run(["gpu-install", "apply", "--yes", "--json"], check=False)
    result = json.loads(again.stdout)
    assert again.returncode == 0, result
    assert result["changed"] == 0, result["changes"]

"""Run one role of the collection inside a host, as a fleet runs it: ansible-playbook in the host's venv."""

from __future__ import annotations

import json
import re
from typing import Any

from hosts import Host

VENV = "/opt/gpu-install/venv"


def converge(host: Host, role: str, extra: dict[str, Any], check: bool = False) -> tuple[int, dict[str, int], str]:
    """Run gpu_install.nvidia.<role> on the host itself; returns (rc, recap, output)."""
    playbook = (
        f"---\n- name: {role} role\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  roles:\n    - role: gpu_install.nvidia.{role}\n"
    )
    host.put(f"/root/{role}-role.yml", playbook.encode())
    host.put("/root/vars.json", json.dumps(extra).encode())
    collections = host.run(
        [f"{VENV}/bin/python", "-c", "from gpu_install.collection import collections_path; print(collections_path())"]
    ).stdout.strip()
    argv = [f"{VENV}/bin/ansible-playbook", "-i", "localhost,", "-e", "@/root/vars.json", f"/root/{role}-role.yml"]
    argv += ["-e", f"ansible_python_interpreter={VENV}/bin/python"]
    if check:
        argv += ["--check", "--diff"]
    proc = host.run(
        argv,
        check=False,
        env={"ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_NOCOLOR": "1"},
    )
    out = proc.stdout + proc.stderr
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
    assert match, out
    recap = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))
    return proc.returncode, recap, out


def failure(out: str) -> dict[str, Any]:
    """The failed task's result, as the default callback prints it in JSON."""
    match = re.search(r"FAILED! => (\{.*\})", out)
    assert match, out
    return json.loads(match.group(1))

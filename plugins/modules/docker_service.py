#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_service
short_description: Apply a new daemon.json to dockerd with the least disruption, or roll it back
description:
  - With O(action=check_flags), fails (exit class 4) when the docker service sets one of O(keys) as a command-line
    flag (systemd ExecStart or Environment in the unit and its drop-ins, /etc/sysconfig/docker, /etc/default/docker),
    naming the file and line; dockerd refuses to start when a setting is both a flag and in daemon.json.
  - With O(action=reload), signals dockerd's main process with SIGHUP (it reloads runtimes and default-runtime;
    running containers keep running); with O(action=restart), restarts the service; a stopped service is started.
    Snap Docker is restarted with C(snap restart docker).
  - Then waits until dockerd answers on its socket and lists O(runtime) (and O(default_runtime) as its default).
    If it does not, the previous daemon.json (O(backup_file)) is put back, Docker is started again, and the task
    fails with exit class 7 and dockerd's own error line.
version_added: "0.1.0"
author:
  - gpu-install maintainers
options:
  action:
    description: What to do.
    type: str
    choices: [check_flags, reload, restart]
    required: true
  keys:
    description: The daemon.json keys this run writes (for O(action=check_flags)).
    type: list
    elements: str
    default: []
  service:
    description: The systemd service name of dockerd.
    type: str
    default: docker
  flavour:
    description: The Docker flavour from detection (C(snap) is restarted through snap).
    type: str
  path:
    description: The daemon.json that was written.
    type: path
    default: /etc/docker/daemon.json
  backup_file:
    description: The backup of the previous daemon.json; empty when the file was created by this run.
    type: path
  runtime:
    description: A runtime that dockerd must list once it is back.
    type: str
  default_runtime:
    description: The runtime dockerd must report as its default once it is back.
    type: str
  cdi:
    description: Whether dockerd must report CDI spec directories (CDI enabled) once it is back.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for dockerd.
    type: int
    default: 60
  reload_keys:
    description:
      - With O(action=reload), keys daemon.json says for the reload only (for example C(default-runtime) as
        C(runc) once gpu-install's is taken out). dockerd's reload applies only what the file sets, so a key that
        went would keep its old value in the running daemon; the file gets its own bytes back after the reload.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Reload dockerd with the nvidia runtime as default
  gpu_install.nvidia.docker_service:
    action: reload
    path: /etc/docker/daemon.json
    backup_file: "{{ daemon_json.backup_file }}"
    runtime: nvidia
    default_runtime: nvidia
"""

RETURN = r"""
conflicts:
  description: Flags outside daemon.json that set a key this run writes (check_flags).
  returned: always
  type: list
  elements: dict
default_runtime:
  description: The default runtime dockerd reports once it is back.
  returned: when dockerd was reloaded or restarted
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import docker_service, errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "choices": ["check_flags", "reload", "restart"], "required": True},
            "keys": {"type": "list", "elements": "str", "default": []},
            "service": {"type": "str", "default": "docker"},
            "flavour": {"type": "str"},
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "backup_file": {"type": "path"},
            "runtime": {"type": "str"},
            "default_runtime": {"type": "str"},
            "cdi": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 60},
            "reload_keys": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["action"] == "check_flags":
        conflicts = docker_service.flag_conflicts(p["keys"], p["service"])
        if conflicts:
            first = conflicts[0]
            reason = (
                f"{first['file']} line {first['line']} sets {first['key']} as a dockerd flag ({first['text']}), "
                f"and gpu-install writes {first['key']} into {p['path']}: dockerd refuses a setting given both ways; "
                "remove the flag there (then systemctl daemon-reload), then run again."
            )
            module.fail_json(
                msg=reason, conflicts=conflicts, gpu_install_error=errors.error_record(errors.INVALID_INPUT, reason)
            )
        module.exit_json(changed=False, conflicts=[])
    if module.check_mode:
        how = {
            "reload": "reload dockerd (SIGHUP: running containers keep running)",
            "restart": "restart dockerd (a changed key needs it: running containers stop unless live-restore is on)",
        }[p["action"]]
        module.exit_json(changed=True, conflicts=[], msg=f"would {how}", diff={"prepared": how})
    try:
        result = docker_service.apply(
            p["action"],
            p["service"],
            p["flavour"],
            p["path"],
            p["backup_file"] or None,
            p["runtime"],
            p["default_runtime"],
            p["cdi"],
            p["timeout"],
            p["reload_keys"],
        )
    except docker_service.ServiceError as exc:
        module.fail_json(msg=exc.reason, conflicts=[], gpu_install_error=errors.error_record(exc.code, exc.reason))
    module.exit_json(changed=True, conflicts=[], **result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.removal: plan and take back what gpu-install did to a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: removal
short_description: Plan and take back what gpu-install did to a host
version_added: 0.2.0
description:
  - The remove playbook's (C(gpu_install.nvidia.remove)) own steps. Removal is never a setting; only that
    playbook calls this module with O(step=take_back).
  - O(step=plan) lists every file, setting, package, unit, key, repository, hold and record gpu-install would take
    back, found on the host (a file only when it is gpu-install's, a package only when gpu-install's package
    record names it and it is installed), what stays and why (Docker, a package a user's package depends on, the
    driver without O(driver)), and Docker's running containers under NVIDIA's runtime. Those refuse the removal
    (C(gpu_install_error) code 6, naming them); Docker needs NVIDIA's runtime to stop them. It changes nothing.
  - O(step=take_back) takes back the plan's units, packages, files, keys, repositories, holds and gpu-install's
    state directory (last, so that a removal killed at any point is finished by the next one). daemon.json and
    containerd's files are their modules' (C(docker_daemon_json), C(containerd_config), O(state=absent)), run by
    the playbook before this step. A file gpu-install wrote and the user edited afterwards (its content differs
    from what the last apply recorded) is copied to C(/var/backups/gpu-install/<stamp>/) first, and so are
    gpu-install's dated C(*.gpu-install.bak) backups beside daemon.json and config.toml, which leave /etc.
    It returns, of O(planned), the items that are no longer to do.
  - O(step=record_files) is the end of apply's record of the files it wrote (their sha256), to tell a user's edit.
author:
  - gpu-install maintainers
options:
  step:
    description: What to do.
    type: str
    choices: [plan, take_back, record_files]
    required: true
  planned:
    description: The plan step's items (for O(step=take_back), which reports which of them were done).
    type: list
    elements: dict
    default: []
  driver:
    description: Take back the NVIDIA driver gpu-install installed too (C(gpu-install remove --driver)).
    type: bool
    default: false
  runtime_name:
    description: The name of NVIDIA's runtime in Docker's configuration.
    type: str
    default: nvidia
  docker_config_path:
    description: Docker's daemon.json.
    type: path
    default: /etc/docker/daemon.json
  containerd_config_path:
    description: containerd's config.toml.
    type: path
    default: /etc/containerd/config.toml
  lock_timeout:
    description: Seconds to wait for the package manager's lock.
    type: int
    default: 300
  state_dir:
    description: gpu-install's state directory.
    type: path
    default: /var/lib/gpu-install
attributes:
  check_mode:
    support: full
    description: O(step=take_back) returns what it would do and changes nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Plan the removal
  gpu_install.nvidia.removal:
    step: plan
  register: plan

- name: Take back the rest
  gpu_install.nvidia.removal:
    step: take_back
    planned: "{{ plan.items }}"
"""

RETURN = r"""
items:
  description: The plan (O(step=plan)); what was done (O(step=take_back)). Each has kind, target, action, detail.
  returned: always
  type: list
  elements: dict
kept:
  description: What stays, each with C(target) and C(why).
  returned: always
  type: list
  elements: dict
blocking_containers:
  description: Docker's running containers under NVIDIA's runtime (id, name, image, runtime).
  returned: always
  type: list
  elements: dict
restart_needed:
  description: Daemons the removal restarts (C(docker) when daemon.json's features change).
  returned: always
  type: list
  elements: str
dockerd_reload_keys:
  description: What daemon.json says for the removal's reload of dockerd only (docker_service O(reload_keys)).
  returned: always
  type: dict
driver_packages:
  description: The planned packages gpu-install installed for the driver (their removal runs inside the drain).
  returned: always
  type: list
  elements: str
step:
  description: The step that ran.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import driver, errors, gpu_detect, pkgmgr, removal


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "choices": ["plan", "take_back", "record_files"], "required": True},
            "planned": {"type": "list", "elements": "dict", "default": []},
            "driver": {"type": "bool", "default": False},
            "runtime_name": {"type": "str", "default": "nvidia"},
            "docker_config_path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "containerd_config_path": {"type": "path", "default": "/etc/containerd/config.toml"},
            "lock_timeout": {"type": "int", "default": 300},
            "state_dir": {"type": "path", "default": removal.STATE_DIR},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "step": p["step"], "items": [], "kept": [], "blocking_containers": [],
              "restart_needed": [], "dockerd_reload_keys": {}, "driver_packages": []}  # fmt: skip
    manager = pkgmgr.manager(gpu_detect.detect(None))
    if p["step"] == "record_files":
        if not module.check_mode:
            removal.record_files(manager, p["state_dir"])
        module.exit_json(**result)
    opts = removal.Options(
        driver=p["driver"],
        runtime_name=p["runtime_name"],
        docker_config_path=p["docker_config_path"],
        containerd_config_path=p["containerd_config_path"],
        state_dir=p["state_dir"],
    )
    try:
        now = removal.plan(opts, manager)
        result.update(kept=now["kept"], blocking_containers=now["blocking_containers"],
                      restart_needed=now["restart_needed"], dockerd_reload_keys=now["dockerd_reload_keys"],
                      driver_packages=now["driver_packages"])  # fmt: skip
        if now["blocking_containers"]:
            raise removal.RemovalError(errors.BUSY, removal.refusal(now["blocking_containers"]))
        if p["step"] == "plan":
            result.update(items=now["items"], lines=[removal.line(e) for e in now["items"]])
            module.exit_json(**result)
        if module.check_mode:
            result.update(items=now["items"], changed=bool(now["items"]))
            module.exit_json(**result)
        # The driver's last steps still need their markers; while the driver stays, so do its records.
        keep = list(driver.REMOVAL_KEEP if p["driver"] else ())
        keep += [k["target"] for k in now["kept"] if k["target"].startswith(p["state_dir"] + "/")]
        removal.take_back(now["items"], manager, p["lock_timeout"], p["state_dir"], keep=keep)
        after = removal.plan(opts, manager)["items"]
    except errors.Failure as exc:
        record = errors.error_record(exc.code, exc.reason)
        module.fail_json(msg=exc.reason, gpu_install_error=record, **result)
    planned = p["planned"] or now["items"]
    left = {removal.key(e) for e in after}
    result["items"] = [e for e in planned if removal.key(e) not in left]
    result["changed"] = bool(result["items"])
    if after:
        result["left"] = after
    module.exit_json(**result)


if __name__ == "__main__":
    main()

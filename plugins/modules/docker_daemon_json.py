#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.docker_daemon_json: merge the NVIDIA runtime into Docker's daemon.json."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_json
short_description: Merge the NVIDIA container runtime into Docker's daemon.json
version_added: 0.1.0
description:
  - Sets C(runtimes.<runtime_name>) and, by default, C(default-runtime) in Docker's daemon.json, and on
    request C(features.cdi) and C(node-generic-resources). It owns only those keys; every other key keeps
    its value and its place, other runtimes (runsc, kata, sysbox) stay.
  - Merges, never overwrites. A file that is not a JSON object Docker reads (comments, trailing commas,
    a BOM, UTF-16, duplicate keys, C(runtimes) that is not an object, ...) is refused with its line and
    column and left byte-identical; the task fails with C(gpu_install_error) code 4.
  - An old C(args) key in the runtime entry (which Docker silently ignores) is moved to C(runtimeArgs),
    with a warning; extra C(runtimeArgs) are kept.
  - Writes atomically (temp file beside the target, fsync, rename), keeps mode, owner and SELinux label,
    follows a symlinked daemon.json to its target, keeps a dated backup, and changes nothing when nothing
    differs (same bytes). The file's indentation (2 or 4 spaces, tab) is kept when it is rewritten.
  - With O(state=absent) the runtime entry is removed and the default runtime the host had before is put
    back (from the record kept in O(state_dir), else the key is dropped when it names our runtime).
  - C(reload_needed) and C(restart_needed) say what dockerd needs for the change to take effect -
    C(runtimes) and C(default-runtime) are reloaded on SIGHUP, C(features) and
    C(node-generic-resources) need a restart.
author:
  - gpu-install maintainers
options:
  path:
    description:
      - The daemon.json to merge into. A symlink is followed; its target is written.
      - Default is the detected Docker flavour's own (for example the snap's
        C(/var/snap/docker/current/config/daemon.json)), else C(/etc/docker/daemon.json).
    type: path
  runtime_name:
    description: The runtime's name under C(runtimes).
    type: str
    default: nvidia
  runtime_path:
    description: The runtime binary, set as the entry's C(path).
    type: str
    default: nvidia-container-runtime
  default_runtime:
    description:
      - Make the runtime Docker's C(default-runtime), so that C(docker build) and Compose get the GPU.
      - With V(false), a C(default-runtime) naming our runtime is given back as with O(state=absent).
    type: bool
    default: true
  runtime:
    description:
      - With O(state=present), register O(runtime_name) (V(true)), or keep it out (V(false)).
      - V(false) is for CDI mode, where Docker injects GPUs from CDI specs and needs no NVIDIA runtime; an entry
        an earlier run registered is taken out and the previous default runtime comes back.
    type: bool
    default: true
  cdi:
    description:
      - Set C(features.cdi=true), for Docker 25 to 27, where CDI is not on by default.
      - With V(false) C(features) is left as it is.
    type: bool
    default: false
  generic_resources:
    description:
      - GPU UUIDs to advertise to Swarm as C(node-generic-resources) entries C(NVIDIA-GPU=<uuid>). Other
        resources in the list stay; C(NVIDIA-GPU) entries not listed are removed.
      - Left out (the default), C(node-generic-resources) is left as it is.
    type: list
    elements: str
  state:
    description: Whether the runtime is configured (V(present)) or taken out (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  backup:
    description:
      - Keep the file as it was in C(<target>.<YYYYmmddTHHMMSS>.gpu-install.bak) beside the target when it
        changes.
    type: bool
    default: true
  validate:
    description:
      - Check the new file with C(dockerd --validate --config-file) before it replaces the old one (in
        check mode too). V(auto) does so when the installed dockerd has C(--validate) (Docker 23 and
        later); V(always) fails (code 3) when it has not; V(never) skips it.
    type: str
    choices: [auto, always, never]
    default: auto
  dockerd_path:
    description: The dockerd to validate with. Default is the one found on PATH (or in /usr/sbin, /usr/bin).
    type: path
  state_dir:
    description: Where the default runtime (and other keys) replaced by this module are recorded.
    type: path
    default: /var/lib/gpu-install
attributes:
  check_mode:
    support: full
    description: Reads, merges and validates, and writes nothing.
  diff_mode:
    support: full
    description: The diff is the file's text before and after, headed with the path.
notes:
  - The merge logic lives in the module_utils C(daemon_json), which the gpu-install CLI imports too.
  - Notify a SIGHUP handler when C(reload_needed), a restart handler when C(restart_needed).
seealso:
  - name: Docker daemon configuration file
    description: The keys of daemon.json and which of them a SIGHUP reloads.
    link: https://docs.docker.com/reference/cli/dockerd/#daemon-configuration-file
"""

EXAMPLES = r"""
- name: Make nvidia Docker's default runtime
  gpu_install.nvidia.docker_daemon_json:
  register: daemon_json

- name: Reload dockerd when only runtimes changed
  ansible.builtin.command: systemctl kill --kill-whom=main --signal=HUP docker
  when: daemon_json.reload_needed
  changed_when: true

- name: Turn CDI on (Docker 25 to 27) and advertise the GPUs to Swarm
  gpu_install.nvidia.docker_daemon_json:
    cdi: true
    generic_resources: "{{ ansible_facts.gpu_install.gpus | map(attribute='uuid') | list }}"

- name: Add the runtime without making it the default
  gpu_install.nvidia.docker_daemon_json:
    default_runtime: false

- name: Take the runtime out, giving back the previous default runtime
  gpu_install.nvidia.docker_daemon_json:
    state: absent
"""

RETURN = r"""
path:
  description: The file written (the symlink's target when O(path) is a symlink).
  returned: always
  type: str
  sample: /etc/docker/daemon.json
backup_file:
  description: The backup made, or null.
  returned: always
  type: str
  sample: /etc/docker/daemon.json.20250101T120000.gpu-install.bak
previous_default_runtime:
  description: C(default-runtime) in the file before this task (null when unset, that is runc).
  returned: always
  type: str
  sample: runsc
default_runtime:
  description: C(default-runtime) after this task (null when unset, that is runc).
  returned: always
  type: str
  sample: nvidia
reload_needed:
  description: The change takes effect with a SIGHUP to dockerd (only C(runtimes) or C(default-runtime) changed).
  returned: always
  type: bool
restart_needed:
  description: The change needs dockerd restarted (C(features) or C(node-generic-resources) changed).
  returned: always
  type: bool
diff:
  description: C(before), C(after), C(before_header) and C(after_header); empty when nothing changed.
  returned: always
  type: dict
warnings:
  description: What was fixed on the way (an C(args) key moved to C(runtimeArgs)).
  returned: when there are any
  type: list
  elements: str
gpu_install_error:
  description: On failure, the exit code (4 malformed file or refused by dockerd --validate, 10 write error,
    3 validate=always without --validate) and the one-sentence reason.
  returned: failure
  type: dict
  sample: {"code": 4, "reason": "/etc/docker/daemon.json cannot be merged: a trailing comma at line 3, column 28;
    fix or move it, then run again."}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import daemon_json, docker_service, fileio


def default_path() -> str:
    try:
        from ansible_collections.gpu_install.nvidia.plugins.module_utils.gpu_detect import detect

        found = detect()["docker"]["config_path"]
    except Exception:  # detection is a convenience here; the fallback is Docker's own default
        found = None
    return str(found) if found else daemon_json.DEFAULT_PATH


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path"},
            "runtime_name": {"type": "str", "default": "nvidia"},
            "runtime_path": {"type": "str", "default": "nvidia-container-runtime"},
            "default_runtime": {"type": "bool", "default": True},
            "cdi": {"type": "bool", "default": False},
            "runtime": {"type": "bool", "default": True},
            "generic_resources": {"type": "list", "elements": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "backup": {"type": "bool", "default": True},
            "validate": {"type": "str", "default": "auto", "choices": ["auto", "always", "never"]},
            "dockerd_path": {"type": "path"},
            "state_dir": {"type": "path", "default": daemon_json.DEFAULT_STATE_DIR},
        },
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"] or default_path()
    options = daemon_json.Options(
        runtime_name=p["runtime_name"],
        runtime_path=p["runtime_path"],
        default_runtime=p["default_runtime"],
        cdi=p["cdi"],
        state=p["state"],
        generic_resources=p["generic_resources"],
        runtime=p["runtime"],
    )
    if not module.check_mode:
        # A run killed while writing (SIGKILL, power loss) leaves its temp file; it never became the file.
        for leftover in fileio.remove_stale_temps(os.path.realpath(path)):
            module.warn(f"removed {leftover}, the temp file of a write that was interrupted")
    try:
        result = daemon_json.configure(
            path,
            options,
            backup=p["backup"],
            validate_mode=p["validate"],
            dockerd_path=p["dockerd_path"],
            state_dir=p["state_dir"],
            check_mode=module.check_mode,
        )
    except daemon_json.DaemonJsonError as exc:
        failed = daemon_json.result_skeleton(os.path.realpath(path))
        failed.pop("warnings")
        module.fail_json(msg=exc.reason, gpu_install_error=exc.record(), **failed)
    if not result["changed"] and p["state"] == "present":
        pending_reload(module, result, options)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


def pending_reload(module: AnsibleModule, result: dict, options: daemon_json.Options) -> None:
    """The file already says it, but a running dockerd does not show it (a run killed between the write and
    the reload): report the reload as the change still to make, with a backup for the handler's rollback."""
    if result["path"] != os.path.realpath(default_path()):
        return  # not the file this host's dockerd reads
    info = docker_service.docker_info()
    runtime = options.runtime_name if options.runtime else None
    default = options.runtime_name if options.runtime and options.default_runtime else None
    if info is None or docker_service.ready(info, runtime, default, options.cdi or None):
        return
    result["changed"] = True
    result["restart_needed"] = bool(options.cdi)
    result["reload_needed"] = not options.cdi
    how = "restarted" if options.cdi else "reloaded"
    result["diff"] = {"prepared": f"{result['path']} is as wanted, but dockerd runs without it: it is {how}"}
    if module.check_mode:
        return
    try:
        with open(result["path"], "rb") as fh:
            data = fh.read()
        st = os.stat(result["path"])
        backup = daemon_json.backup_name(result["path"])
        fileio.write_atomic(backup, data, st.st_mode & 0o7777, st.st_uid, st.st_gid, like=result["path"])
        result["backup_file"] = backup
    except OSError as exc:
        error = daemon_json.host_error(result["path"], exc, "back up")
        module.fail_json(msg=error.reason, gpu_install_error=error.record(), **result)


if __name__ == "__main__":
    main()

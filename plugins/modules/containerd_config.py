#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.containerd_config: NVIDIA's runtime and CDI in containerd's CRI plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: containerd_config
short_description: Configure containerd's CRI plugin for NVIDIA's container runtime or CDI
version_added: 0.2.0
description:
  - Registers NVIDIA's runtime in containerd's CRI plugin (O(mode=runtime)), and turns CDI on where containerd
    has it off by default (containerd 1.7), through a drop-in file that gpu-install owns.
  - The user's config.toml changes by one line at most - its top-level C(imports) gains the drop-in directory's
    glob (for example C(/etc/containerd/conf.d/*.toml)), as NVIDIA's C(nvidia-ctk runtime configure) does.
    Comments, key order and spacing stay byte for byte. A config.toml that already imports the drop-in (by name or
    by a glob) is not touched; a missing one is created with C(version) and C(imports) only.
  - containerd 1.x replaces a plugin's whole section with an imported file's, so on 1.x the drop-in repeats the
    user's CRI section (config.toml merged with the files it imports) with gpu-install's keys added. containerd
    2.x merges imported files key by key, so there the drop-in holds gpu-install's keys only (and none at all in
    O(mode=cdi), where CDI is on by default; an earlier drop-in is removed).
  - The drop-in speaks the configuration version of the installed containerd (2 for 1.6 and 1.7, 3 for 2.x),
    or 1 under a version 1 config.toml on containerd 1.x (which refuses to mix them).
  - Malformed TOML is refused with its path, line and column (C(gpu_install_error) code 4), nothing written.
    containerd older than 1.6, and O(mode=cdi) on 1.6, are refused with code 3.
  - The new files are checked with C(containerd --config <candidate> config dump) before config.toml is replaced;
    the dump must show the runtime (and default, and CDI) and every runtime the user had. Then containerd is
    restarted when its unit is active (O(restart)), and the module waits until C(ctr version) answers; if it does
    not, both files are put back, containerd is restarted again, and the task fails with code 7.
  - When nothing differs but the drop-in is newer than the running containerd (a run killed between its write and
    the restart), containerd is restarted and the task reports a change.
  - What it changed in config.toml (the import it added, or that it created the file) is recorded in
    C(<state_dir>/containerd.json), so that O(state=absent) takes back exactly that.
  - O(state=absent) removes the drop-in (backed up first when it was edited after gpu-install wrote it), takes the
    import gpu-install added out of config.toml again by a text edit (the file otherwise byte for byte as it was,
    a dated backup kept), deletes a config.toml gpu-install created and nobody changed since, and the drop-in's
    directory when gpu-install made it and it is empty; then restarts containerd as above, with the same rollback
    (code 7). Without a record (a host configured by an older release) the import is taken out only when it is
    NVIDIA's C(/etc/containerd/conf.d/*.toml) and no other file matches it.
author:
  - gpu-install maintainers
options:
  state:
    description:
      - V(present) configures containerd; V(absent) takes back what gpu-install configured.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description: Where the record of what gpu-install changed in config.toml is kept.
    type: path
    default: /var/lib/gpu-install
  path:
    description: containerd's main configuration file. A symlink is followed; its target is written.
    type: path
    default: /etc/containerd/config.toml
  drop_in:
    description: The file gpu-install writes and owns. config.toml imports the glob C(<its directory>/*.toml).
    type: path
    default: /etc/containerd/conf.d/99-gpu-install.toml
  mode:
    description:
      - V(runtime) registers NVIDIA's runtime (and enables CDI on containerd 1.7).
      - V(cdi) enables CDI only (containerd 1.7 and later); Kubernetes' device plugin or DRA driver then hands
        GPUs to containers from CDI specs.
    type: str
    choices: [runtime, cdi]
    default: runtime
  runtime_name:
    description: The runtime's name under C(containerd.runtimes).
    type: str
    default: nvidia
  runtime_path:
    description:
      - NVIDIA's runtime binary, set as the entry's C(options.BinaryName). A name is looked up on PATH, else taken
        from C(/usr/bin), where NVIDIA's package installs it.
    type: str
    default: nvidia-container-runtime
  default_runtime:
    description:
      - Make the runtime the CRI plugin's C(default_runtime_name). With V(false), a default that names the runtime
        (left by an earlier run or by nvidia-ctk) is set back to containerd's own, C(runc).
    type: bool
    default: false
  restart:
    description: Restart containerd when something changed and its systemd unit is active, and wait until it answers.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for containerd to answer after the restart.
    type: int
    default: 60
  backup:
    description: Keep each file as it was in C(<file>.<YYYYmmddTHHMMSS>.gpu-install.bak) beside it when it changes.
    type: bool
    default: true
  containerd_path:
    description: The containerd binary (its C(--version) decides the configuration version). Default is found on PATH.
    type: path
  ctr_path:
    description: The ctr binary used to see containerd answer. Default is found on PATH.
    type: path
  socket:
    description: containerd's socket.
    type: path
    default: /run/containerd/containerd.sock
attributes:
  check_mode:
    support: full
    description: Reads and plans, shows the diff, and writes nothing.
  diff_mode:
    support: full
    description: One before/after diff per file that changes, headed with its path.
notes:
  - The logic lives in the module_utils C(containerd), which the gpu-install CLI imports too.
  - Facts and their sources are in the collection's docs/containerd.md.
seealso:
  - name: containerd CRI plugin configuration
    description: The CRI plugin's keys per configuration version.
    link: https://github.com/containerd/containerd/blob/main/docs/cri/config.md
"""

EXAMPLES = r"""
- name: Register NVIDIA's runtime with containerd
  gpu_install.nvidia.containerd_config:

- name: Make it the default runtime of Kubernetes pods
  gpu_install.nvidia.containerd_config:
    default_runtime: true

- name: Enable CDI only (containerd 1.7 and later)
  gpu_install.nvidia.containerd_config:
    mode: cdi

- name: Take back what gpu-install configured in containerd
  gpu_install.nvidia.containerd_config:
    state: absent
"""

RETURN = r"""
path:
  description: config.toml (the symlink's target when O(path) is a symlink).
  returned: always
  type: str
  sample: /etc/containerd/config.toml
drop_in:
  description: The drop-in file.
  returned: always
  type: str
  sample: /etc/containerd/conf.d/99-gpu-install.toml
config_version:
  description: The drop-in's configuration version (null when containerd could not be asked).
  returned: always
  type: int
  sample: 2
plugin_id:
  description: The CRI plugin id the drop-in uses.
  returned: always
  type: str
  sample: io.containerd.grpc.v1.cri
backup_file:
  description: The backup of config.toml made, or null.
  returned: always
  type: str
drop_in_backup_file:
  description: The backup of the earlier drop-in made, or null.
  returned: always
  type: str
restarted:
  description: containerd was restarted and answered.
  returned: always
  type: bool
diff:
  description: A list of C(before), C(after), C(before_header), C(after_header) per file that changes (or one
    C(prepared) entry when only a restart is pending); empty when none.
  returned: always
  type: list
  elements: dict
items:
  description:
    - With O(state=absent), what is (in check mode, would be) taken back, one item per thing, in the shape of
      gpu-install's removal plan - C(kind) (file or setting), C(target), C(action) (remove, edit or restart),
      C(detail). Empty with O(state=present).
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "setting", "target": "/etc/containerd/config.toml imports", "action": "edit",
    "detail": "takes out /etc/containerd/conf.d/*.toml; backed up to
    /etc/containerd/config.toml.20261207T120000.gpu-install.bak"}]
kept:
  description: With O(state=absent), what stays although gpu-install may have written it, and why (C(target), C(why)).
  returned: always
  type: list
  elements: dict
msg:
  description: What happened, in one sentence.
  returned: always
  type: str
gpu_install_error:
  description: On failure, the exit code (3 unsupported containerd or mode, 4 malformed file or refused by
    containerd, 7 containerd did not come back and the configuration was restored, 10 write error) and the reason.
  returned: failure
  type: dict
  sample: {"code": 4, "reason": "/etc/containerd/config.toml cannot be merged: invalid value at line 3, column 9;
    fix or move it, then run again."}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import containerd, fileio


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "state_dir": {"type": "path", "default": containerd.DEFAULT_STATE_DIR},
            "path": {"type": "path", "default": containerd.DEFAULT_PATH},
            "drop_in": {"type": "path", "default": containerd.DEFAULT_DROP_IN},
            "mode": {"type": "str", "default": "runtime", "choices": list(containerd.MODES)},
            "runtime_name": {"type": "str", "default": "nvidia"},
            "runtime_path": {"type": "str", "default": "nvidia-container-runtime"},
            "default_runtime": {"type": "bool", "default": False},
            "restart": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 60},
            "backup": {"type": "bool", "default": True},
            "containerd_path": {"type": "path"},
            "ctr_path": {"type": "path"},
            "socket": {"type": "path", "default": containerd.DEFAULT_SOCKET},
        },
        supports_check_mode=True,
    )
    p = module.params
    options = containerd.Options(
        mode=p["mode"],
        runtime_name=p["runtime_name"],
        runtime_path=p["runtime_path"],
        default_runtime=p["default_runtime"],
    )
    if not module.check_mode:
        for target in (p["path"], p["drop_in"]):
            for leftover in fileio.remove_stale_temps(os.path.realpath(target)):
                module.warn(f"removed {leftover}, the temp file of a write that was interrupted")
    try:
        common = {
            "restart": p["restart"],
            "timeout": p["timeout"],
            "backup": p["backup"],
            "check_mode": module.check_mode,
            "ctr_path": p["ctr_path"],
            "socket": p["socket"],
            "state_dir": p["state_dir"],
        }
        if p["state"] == "absent":
            result = containerd.remove(p["path"], p["drop_in"], **common)
        else:
            result = containerd.configure(
                p["path"], p["drop_in"], options, containerd_path=p["containerd_path"], **common
            )
    except containerd.ContainerdError as exc:
        failed = containerd.result_skeleton(os.path.realpath(p["path"]), os.path.realpath(p["drop_in"]))
        failed.pop("warnings")
        failed.pop("msg")
        module.fail_json(msg=exc.reason, gpu_install_error=exc.record(), **failed)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

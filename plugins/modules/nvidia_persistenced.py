#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.nvidia_persistenced: nvidia-persistenced's unit, run in persistence mode."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_persistenced
short_description: Make nvidia-persistenced's systemd unit run the daemon in persistence mode
version_added: 0.1.0
description:
  - Finds the C(nvidia-persistenced) binary and the C(nvidia-persistenced.service) unit systemd loads (the first
    one in C(/etc/systemd/system), C(/run/systemd/system), C(/usr/local/lib/systemd/system),
    C(/usr/lib/systemd/system), C(/lib/systemd/system)), and reads its effective C(ExecStart=) with its drop-ins,
    as systemd does (comments, continuation lines, quoting, drop-ins in file name order).
  - Where that command passes C(--no-persistence-mode) (Ubuntu's nvidia-compute-utils unit does), writes the drop-in
    C(/etc/systemd/system/nvidia-persistenced.service.d/gpu-install.conf) that resets C(ExecStart=) and runs the
    same command without the flag. Where the unit has no C([Install]) section (Ubuntu's is static, started by
    udev), the same drop-in adds C(WantedBy=multi-user.target) so that it can be enabled. The drop-in is removed
    when it is no longer needed.
  - Where no unit is installed but the binary is (a runfile install, a driver in C(/usr/local/nvidia)), writes
    C(/etc/systemd/system/nvidia-persistenced.service) for it; that unit is removed when a package later
    installs its own.
  - Files are written atomically (temp file beside the target, fsync, rename), mode 0644. The module never runs
    systemctl, never starts or enables anything and never changes a GPU setting; C(daemon_reload) in its result
    says whether a unit file changed.
  - Refuses (RV(refusal), code 3) a masked unit, and a later drop-in that would put the flag back; with
    O(fail_on_refusal) it fails with C(gpu_install_error). Nothing is written then.
author:
  - gpu-install maintainers
options:
  binary:
    description:
      - The nvidia-persistenced binary a written unit runs; default the first executable of O(search_paths).
    type: path
  search_paths:
    description:
      - Where to look for the binary, in order.
    type: list
    elements: path
    default:
      - /usr/bin/nvidia-persistenced
      - /usr/sbin/nvidia-persistenced
      - /usr/local/bin/nvidia-persistenced
      - /usr/local/nvidia/bin/nvidia-persistenced
  fail_on_refusal:
    description:
      - Fail with C(gpu_install_error) when RV(refusal) is set. Turn it off to read the refusal and decide
        (a role refuses through M(gpu_install.nvidia.error), which can defer in check mode).
    type: bool
    default: true
  root:
    description:
      - Read and write the tree below this directory (an image being built, a test tree). The files still name
        host paths.
    type: path
    default: /
attributes:
  check_mode:
    support: full
    description: Computes and compares; writes nothing.
  diff_mode:
    support: full
    description: One diff per file written or removed, before and after, headed with its path.
notes:
  - The logic lives in the module_utils C(persistenced).
  - Start and enable the service with M(ansible.builtin.systemd_service) after a C(daemon-reload) when
    RV(daemon_reload) is true; restart it if it was running, so that it runs the new command.
seealso:
  - name: nvidia-persistenced
    description: NVIDIA's documentation of the persistence daemon.
    link: https://docs.nvidia.com/deploy/driver-persistence/index.html
"""

EXAMPLES = r"""
- name: Make nvidia-persistenced's unit run it in persistence mode
  gpu_install.nvidia.nvidia_persistenced:
  register: persistenced
  notify: reload systemd

- name: Only look (read-only), and decide on a refusal later
  gpu_install.nvidia.nvidia_persistenced:
    fail_on_refusal: false
  check_mode: true
  register: persistenced_found
"""

RETURN = r"""
binary:
  description: The nvidia-persistenced binary found (or given), or null.
  returned: always
  type: str
  sample: /usr/bin/nvidia-persistenced
searched:
  description: Where the binary was looked for (O(binary) alone when it is given).
  returned: always
  type: list
  elements: str
unit:
  description: The unit file systemd loads once the files are as this module leaves them, or null.
  returned: always
  type: str
  sample: /lib/systemd/system/nvidia-persistenced.service
unit_source:
  description: C(package) (installed by a package or the administrator), C(gpu-install) (written here), or null.
  returned: always
  type: str
unit_existed:
  description: Whether that unit file was on disk before this task.
  returned: always
  type: bool
masked:
  description: Whether the unit is masked (a symlink to /dev/null, or an empty file).
  returned: always
  type: bool
no_persistence_mode:
  description: Whether the unit, without gpu-install's drop-in, starts the daemon with C(--no-persistence-mode).
  returned: always
  type: bool
install_section_added:
  description: Whether the drop-in adds C([Install] WantedBy=multi-user.target) to a unit that has no [Install].
  returned: always
  type: bool
dropin:
  description: The path of gpu-install's drop-in when one is needed, else null.
  returned: always
  type: str
  sample: /etc/systemd/system/nvidia-persistenced.service.d/gpu-install.conf
exec_start:
  description: The effective C(ExecStart=) commands once the files are as this module leaves them.
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose"]
files:
  description: The files written or removed (would be, in check mode), each with C(path) and C(action).
  returned: always
  type: list
  elements: dict
daemon_reload:
  description: Whether a unit file changed, so that systemd must reload its units.
  returned: always
  type: bool
refusal:
  description: Null, or C(code) and C(reason) of why nothing may be written.
  returned: always
  type: dict
diff:
  description: One before/after per file, headed with its path; empty when nothing changed.
  returned: always
  type: list
  elements: dict
gpu_install_error:
  description: On failure, the exit code (3 refused, 10 could not read or write) and the reason.
  returned: failure
  type: dict
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, persistenced


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "binary": {"type": "path"},
            "search_paths": {"type": "list", "elements": "path", "default": list(persistenced.BINARY_PATHS)},
            "fail_on_refusal": {"type": "bool", "default": True},
            "root": {"type": "path", "default": "/"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result: Dict[str, Any] = {
        "changed": False,
        "binary": None,
        "searched": [p["binary"]] if p["binary"] else list(p["search_paths"]),
        "unit": None,
        "unit_source": None,
        "unit_existed": False,
        "masked": False,
        "no_persistence_mode": False,
        "install_section_added": False,
        "dropin": None,
        "exec_start": [],
        "files": [],
        "daemon_reload": False,
        "refusal": None,
        "diff": [],
    }
    try:
        planned = persistenced.plan(p["root"], p["binary"], p["search_paths"])
        for key in (
            "binary", "unit", "unit_source", "unit_existed", "masked", "no_persistence_mode",
            "install_section_added", "dropin", "exec_start", "refusal",
        ):  # fmt: skip
            result[key] = planned[key]
        if planned["refusal"] is not None:
            if p["fail_on_refusal"]:
                reason = planned["refusal"]["reason"]
                module.fail_json(msg=reason, gpu_install_error=planned["refusal"], **result)
            module.exit_json(**result)
        files = planned["files"]
        result["files"] = [
            {"path": path, "action": "removed" if text is None else "written"} for path, text in sorted(files.items())
        ]
        result["changed"] = result["daemon_reload"] = bool(files)
        if files and module._diff:
            result["diff"] = [
                {
                    "before": planned["before"][path] or "",
                    "after": text or "",
                    "before_header": path if planned["before"][path] is not None else "/dev/null",
                    "after_header": path if text is not None else "/dev/null",
                }
                for path, text in sorted(files.items())
            ]
        if files and not module.check_mode:
            persistenced.apply(planned, p["root"])
    except errors.Failure as exc:
        module.fail_json(msg=exc.reason, gpu_install_error=exc.record(), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.nvidia_driver_dkms: the NVIDIA DKMS module built for every kernel with headers."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_dkms
short_description: Make sure DKMS built the NVIDIA kernel module for every kernel that has headers
version_added: 0.1.0
description:
  - Reads C(dkms status) and the kernels under C(/lib/modules) whose C(build) headers exist; for each such
    kernel where a registered C(nvidia*) DKMS module is not installed, runs C(dkms autoinstall -k KERNEL)
    and checks that it is installed then.
  - Nothing to do where no nvidia DKMS module is registered (precompiled, signed modules).
  - In check mode it reports the kernels it would build for.
author:
  - gpu-install maintainers
options:
  modules_dir:
    description: Where the kernels' module trees are.
    type: path
    default: /lib/modules
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Build the NVIDIA module for every kernel with headers
  gpu_install.nvidia.nvidia_driver_dkms:
"""

RETURN = r"""
built:
  description: Kernels the module was built for in this run (would be, in check mode).
  returned: always
  type: list
  elements: str
status:
  description: C(dkms status) after the run.
  returned: always
  type: str
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import driver, errors


def _status() -> str:
    proc = subprocess.run(["dkms", "status"], capture_output=True, text=True, check=False)
    return proc.stdout


def main() -> None:
    module = AnsibleModule(
        argument_spec={"modules_dir": {"type": "path", "default": "/lib/modules"}},
        supports_check_mode=True,
    )
    if shutil.which("dkms") is None:
        module.exit_json(changed=False, built=[], status="")
    top = module.params["modules_dir"]
    try:
        kernels = sorted(k for k in os.listdir(top) if os.path.isdir(os.path.join(top, k, "build")))
    except OSError:
        kernels = []
    status = _status()
    todo = driver.dkms_missing(status, kernels)
    if not todo or module.check_mode:
        module.exit_json(changed=bool(todo), built=todo, status=status)
    for kernel in todo:
        proc = subprocess.run(["dkms", "autoinstall", "-k", kernel], capture_output=True, text=True, check=False)
        status = _status()
        if kernel in driver.dkms_missing(status, [kernel]):
            reason = (
                f"DKMS could not build the NVIDIA kernel module for kernel {kernel}: "
                f"{(proc.stdout + proc.stderr).strip()[-400:]} (see /var/lib/dkms/*/*/build/make.log)."
            )
            module.fail_json(msg=reason, gpu_install_error=errors.error_record(errors.INTERNAL, reason), built=[])
    module.exit_json(changed=True, built=todo, status=status)


if __name__ == "__main__":
    main()

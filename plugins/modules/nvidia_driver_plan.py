#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.nvidia_driver_plan: what the nvidia_driver role installs, or why it refuses."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_plan
short_description: Decide the NVIDIA driver's packages, kernel modules and branch hold for a host
version_added: 0.1.0
description:
  - Computes, from the host's facts and the nvidia_driver role's settings, the driver packages (per
    distribution, version, source and kernel-module flavour), the kernel headers packages, Fabric
    Manager for NVSwitch hosts, the file that holds the driver branch (apt preferences or dnf's
    nvidia-driver module stream) and the nouveau blacklist.
  - Returns C(refusal) (exit class 3 and one sentence) where the host or the settings cannot be served -
    RHEL with C(source=distro), a GPU the chosen kernel modules do not support, Secure Boot with
    unsigned modules and no enrolled DKMS key.
  - Where a driver from another source or branch is installed (a switch), returns what leaves first - the old
    branch's packages (C(remove)), or a runfile's driver through NVIDIA's uninstaller (C(uninstall_runfile)).
  - Reads only; it runs the same in check mode. The decisions live in the module_utils C(driver).
author:
  - gpu-install maintainers
options:
  source:
    description: Where the driver comes from (C(nvidia_driver_source)).
    type: str
    choices: [auto, distro, runfile, none]
    default: auto
  branch:
    description: The driver branch (C(nvidia_driver_branch)); empty for the source's default.
    type: str
    default: ""
  kernel_modules:
    description: Kernel module flavour (C(nvidia_driver_kernel_modules)).
    type: str
    choices: [auto, open, proprietary]
    default: auto
  image_build:
    description: An image build (C(gpu_install_image_build)) - the running kernel's packages are not planned.
    type: bool
    default: false
  facts:
    description: The host's facts as C(gpu_facts) returns them; detected when not given.
    type: dict
  after_install:
    description:
      - Also decide C(reboot_needed) from the driver detected now (give no O(facts) then) - the installed
        driver differs from the loaded one, or none is loaded after a fresh install, or nouveau holds the GPUs.
    type: bool
    default: false
  fresh_install:
    description: The driver was installed by this run (with O(after_install)).
    type: bool
    default: false
  installed_version:
    description: The installed driver's version (the runfile's); empty - the driver package's, as detected.
    type: str
    default: ""
  lock_timeout:
    description:
      - Seconds to wait for apt's lock where Ubuntu's package lists were never fetched and the plan fetches them
        (C(source=distro), outside check mode) to learn which driver branches the archive offers.
    type: int
    default: 300
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Plan the driver
  gpu_install.nvidia.nvidia_driver_plan:
    source: distro
    facts: "{{ ansible_facts.gpu_install }}"
  register: plan
"""

RETURN = r"""
refusal:
  description: C({code, reason}) when the role must stop before any change, else null.
  returned: always
  type: dict
manager:
  description: The host's package manager (apt or dnf).
  returned: always
  type: str
source:
  description: The driver's source (C(nvidia_driver_source)).
  returned: always
  type: str
signed_modules:
  description: The source's kernel modules are precompiled and signed by the distribution (Ubuntu's).
  returned: always
  type: bool
kernel_modules:
  description: The kernel module flavour chosen (open or proprietary); null for source none or a refusal.
  returned: always
  type: str
branch:
  description: The branch installed (the setting, or the distribution's own); empty for the newest.
  returned: always
  type: str
packages:
  description: Driver packages (apt C(name=version-glob) where a branch is pinned by version).
  returned: always
  type: list
  elements: str
headers:
  description: Kernel headers metapackages that follow new kernels.
  returned: always
  type: list
  elements: str
running_kernel_packages:
  description: Packages for the running kernel itself (headers, precompiled modules); empty in image builds.
  returned: always
  type: list
  elements: str
fabricmanager:
  description: Fabric Manager packages (NVSwitch hosts).
  returned: always
  type: list
  elements: str
hold:
  description:
    - C({path, content}) of the file that picks and holds the branch - apt's pin (a branch before 590), dnf's
      nvidia-driver module stream (EL 8, 9, Amazon Linux 2023; the newest stream without a branch) - or null.
  returned: always
  type: dict
pinning:
  description: NVIDIA's pinning package that holds the branch on apt from 590, installed before the driver.
  returned: always
  type: list
  elements: str
module:
  description: The dnf module stream enabled (C(nvidia-driver:580-open), C(nvidia-driver:open-dkms)), or null.
  returned: always
  type: str
versionlock:
  description:
    - Where dnf has no module streams (EL 10), C({glob, plugin, path, held, stale}) - the branch is held with dnf's
      versionlock plugin on every package matching NVIDIA's glob; C(held) - already locked; C(stale) - entries of
      another branch, released first. Null otherwise.
  returned: always
  type: dict
repositories:
  description: Repositories beyond NVIDIA's that the driver needs gpu-install to configure (C(epel) for dkms).
  returned: always
  type: list
  elements: str
codeready:
  description:
    - The distribution's repositories EPEL's dkms needs enabled, as groups of C({ids, enable, defined_by}) - of each
      group, the first id the host defines is enabled with its C(enable) command.
  returned: always
  type: list
  elements: dict
codeready_packages:
  description: Packages installed before those repositories are enabled (dnf config-manager, Oracle's EPEL release).
  returned: always
  type: list
  elements: str
repository_packages:
  description: Per repository id, the packages its preflight checks it offers (the driver's, the pinning package, dkms).
  returned: always
  type: dict
blacklist:
  description: C({path, content}) of the nouveau / nova_core blacklist.
  returned: always
  type: dict
initramfs:
  description: The command that rebuilds the initramfs (argv).
  returned: always
  type: list
  elements: str
dkms:
  description: The modules are built by DKMS (not precompiled and signed by the distribution).
  returned: always
  type: bool
reboot_needed:
  description: With O(after_install) - the installed driver can only run after a reboot.
  returned: always
  type: bool
hold_path:
  description: Where this package manager's branch hold lives (removed when a switch leaves no branch to hold).
  returned: always
  type: str
installed:
  description: C({source, branch}) of the driver installed now (source null where none is; runfile by its uninstaller).
  returned: always
  type: dict
switch:
  description: The installed driver comes from another source, or another branch than the one set.
  returned: always
  type: bool
remove:
  description: Packages of the installed driver's branch, purged before the new driver goes in (a switch).
  returned: always
  type: list
  elements: str
removed_versions:
  description: The same packages with their installed versions (C(name version)), for the plan.
  returned: always
  type: list
  elements: str
uninstall_runfile:
  description: A runfile's driver is removed with NVIDIA's C(nvidia-uninstall --silent) first (a switch to packages).
  returned: always
  type: bool
runfile_uninstall:
  description: NVIDIA's uninstaller's command line (argv).
  returned: always
  type: list
  elements: str
runfile_state:
  description: Where gpu-install records the runfile it ran (removed with the runfile's driver).
  returned: always
  type: str
drain_marker:
  description: The file that says gpu-install drained the node and has not undrained it yet.
  returned: always
  type: str
initramfs_tool:
  description: The initramfs tool (update-initramfs or dracut); the initramfs is rebuilt only where it exists.
  returned: always
  type: str
initramfs_pending:
  description: The file that says a driver removal has yet to rebuild the initramfs without the nouveau blacklist.
  returned: always
  type: str
versionlock_delete:
  description: The command (argv, the entries appended) that releases dnf versionlock entries.
  returned: always
  type: list
  elements: str
"""

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import driver, errors, gpu_detect, pkgmgr

MOK_PUBLIC_KEYS = ("/var/lib/dkms/mok.pub", "/var/lib/shim-signed/mok/MOK.der")


def _mok_enrolled() -> bool:
    """A DKMS signing key exists and the firmware trusts it (mokutil --test-key)."""
    for path in MOK_PUBLIC_KEYS:
        if not os.path.exists(path):
            continue
        try:
            proc = subprocess.run(["mokutil", "--test-key", path], capture_output=True, text=True, check=False)
        except OSError:
            return False
        if "already enrolled" in (proc.stdout + proc.stderr):
            return True
    return False


def _probes(module: AnsibleModule, facts: dict) -> dict:
    """What the plan asks of the package manager: dnf's versionlock list (RHEL family); Ubuntu's kernel metapackage
    and the branches its archive offers."""
    osf = facts.get("os") or {}
    if osf.get("family") == "redhat" and module.params["source"] == "auto" and not module.params["after_install"]:
        try:
            with open(driver.VERSIONLOCK_LIST) as fh:
                return {"versionlock": fh.read()}
        except OSError:
            return {"versionlock": ""}
    if (
        (osf.get("like") or {}).get("id", osf.get("id")) != "ubuntu"
        or module.params["source"] == "none"
        or module.params["after_install"]
    ):
        return {}
    probes = {"kernel_images": pkgmgr.dpkg_depends(driver.KERNEL_METAPACKAGES)}
    if module.params["source"] == "distro":
        names = pkgmgr.apt_names(driver.UBUNTU_PROBE_PREFIXES)
        if not names and not module.check_mode:
            # Lists never fetched (fresh cloud images): fetch them, as the install step would, then ask again.
            try:
                pkgmgr.apt_update({}, int(module.params["lock_timeout"]))
            except errors.Failure as exc:
                module.fail_json(msg=exc.reason, gpu_install_error=exc.record())
            names = pkgmgr.apt_names(driver.UBUNTU_PROBE_PREFIXES)
        probes["apt_names"] = names
    return probes


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str", "choices": ["auto", "distro", "runfile", "none"], "default": "auto"},
            "branch": {"type": "str", "default": ""},
            "kernel_modules": {"type": "str", "choices": ["auto", "open", "proprietary"], "default": "auto"},
            "image_build": {"type": "bool", "default": False},
            "facts": {"type": "dict"},
            "after_install": {"type": "bool", "default": False},
            "fresh_install": {"type": "bool", "default": False},
            "installed_version": {"type": "str", "default": ""},
            "lock_timeout": {"type": "int", "default": 300},
        },
        supports_check_mode=True,
    )
    p = module.params
    facts = p["facts"] or gpu_detect.detect(None)
    settings = {k: p[k] for k in ("source", "branch", "kernel_modules", "image_build")}
    mok = bool(facts.get("secure_boot")) and _mok_enrolled()
    result = driver.plan(facts, settings, mok_enrolled=mok, probes=_probes(module, facts))
    result["reboot_needed"] = False
    if not p["after_install"] and p["source"] != "none":
        # A driver installed from another source or branch leaves first (read-only probes: the same in check mode).
        moved = driver.switch(
            result,
            pkgmgr.installed_versions(),
            runfile_record=os.path.exists(driver.RUNFILE_STATE),
            uninstaller=os.path.exists(driver.RUNFILE_UNINSTALLER),
            loaded_version=(facts.get("driver") or {}).get("version"),
        )
        refusal = moved.pop("refusal")
        result.update(moved)
        result["refusal"] = result["refusal"] or refusal
    if p["after_install"] and p["source"] != "none":
        package = (facts.get("driver") or {}).get("package") or {}
        installed = p["installed_version"] or package.get("version")
        result["reboot_needed"] = driver.reboot_required(
            facts.get("driver") or {}, installed, p["fresh_install"], bool(facts.get("nouveau_loaded"))
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

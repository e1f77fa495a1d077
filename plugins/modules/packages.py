#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: packages
short_description: Install packages with apt-get or dnf by argv, waiting for the package manager's lock
description:
  - Installs or removes packages with C(apt-get) or C(dnf) run by argv, with no python3-apt or python3-dnf
    on the host, so that check mode works on minimal hosts.
  - Check mode simulates (C(apt-get -s)) and lists every package and version that would be installed; with
    O(update_cache) the simulation reads fresh package lists fetched into a scratch directory, never the host's.
  - A real run waits up to O(lock_timeout) seconds while another process holds the package manager's lock,
    then fails with exit class 6 naming that process; a dpkg run that was interrupted is finished first
    (C(dpkg --configure -a), then C(apt-get install -f --reinstall) of half-installed packages; exit class 10
    when that cannot mend it).
  - A package source problem (unknown package, failed download, unsigned repository) fails with exit class 5.
version_added: "0.1.0"
author:
  - gpu-install maintainers
options:
  names:
    description:
      - Packages, optionally with a version (apt C(name=version), dnf C(name-version)).
    type: list
    elements: str
    required: true
  state:
    description:
      - Whether the packages are installed or removed.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=absent), remove the packages' configuration files too (apt C(purge); dnf has none to keep).
    type: bool
    default: false
  update_cache:
    description:
      - Refresh the package lists before installing (only when something is missing).
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for the package manager's lock.
    type: int
    default: 300
  proxy:
    description:
      - HTTP(S) proxy for downloads; empty for none.
    type: str
    default: ""
  install_recommends:
    description:
      - Install apt's recommended packages too.
    type: bool
    default: false
  simulate:
    description:
      - In check mode, resolve the packages with the package manager. Turn it off when their repository is
        written by the same run (it does not exist yet in check mode).
    type: bool
    default: true
  probe:
    description:
      - Only find out whether the packages can be installed (run it in check mode); never fail and never mark
        the plan, but return RV(installable) and RV(reason).
    type: bool
    default: false
  record:
    description:
      - With O(state=present), record every package a real run installs (the requested ones and the dependencies
        that came with them) in C(/var/lib/gpu-install/packages.json) under this group (C(docker), C(container),
        C(driver)), so that C(gpu-install remove) can take back exactly those; empty records nothing.
      - A pending entry is written before the package manager runs and resolved after it, or by the next reader
        when the run was killed in between. A package already recorded keeps its first group.
      - With O(state=absent), removed packages leave the record whatever this option says.
    type: str
    default: ""
  manager:
    description:
      - The package manager; C(auto) picks it from the host's family.
    type: str
    choices: [auto, apt, dnf]
    default: auto
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Install Docker from the distribution
  gpu_install.nvidia.packages:
    names: [docker.io]
    update_cache: true
    lock_timeout: "{{ gpu_install_lock_timeout }}"
"""

RETURN = r"""
missing:
  description: The packages that were not installed (present) or were installed (absent) before.
  returned: always
  type: list
  elements: str
transaction:
  description: Packages and versions the package manager installs, dependencies included (apt, check mode).
  returned: always
  type: list
  elements: dict
installable:
  description: With O(probe), whether the package manager can install the packages.
  returned: always
  type: bool
reason:
  description: With O(probe), why it cannot (empty when it can).
  returned: always
  type: str
recorded:
  description:
    - Packages this run added to gpu-install's package record (O(record)), or dropped from it (O(state=absent)).
  returned: always
  type: list
  elements: str
lock_holders:
  description: Processes that held the package manager's lock while this run waited.
  returned: always
  type: list
  elements: dict
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, gpu_detect, pkgmgr, pkgrecord


def _scratch_simulation(module, specs, env, recommends):
    """Fresh lists in a scratch directory: the host's apt state is not touched."""
    scratch = tempfile.mkdtemp(prefix="gpu-install-apt-")
    try:
        os.makedirs(os.path.join(scratch, "lists", "partial"))
        os.makedirs(os.path.join(scratch, "archives", "partial"))
        opts = [
            "-o", f"Dir::State::Lists={scratch}/lists",
            "-o", f"Dir::Cache={scratch}",
            "-o", f"Dir::Cache::archives={scratch}/archives",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

        def runner(argv, run_env):
            return pkgmgr.run([argv[0], *opts, *argv[1:]], run_env)

        rc, out, err = runner(["apt-get", "update", "-q"], dict(pkgmgr.APT_ENV, **env))
        if rc != 0:
            raise pkgmgr.PackageError(
                errors.PACKAGE_SOURCE,
                f"apt cannot refresh the package lists: {(err or out).strip().splitlines()[-1:]}; check the "
                "package sources and the proxy (gpu_install_proxy).",
            )
        return pkgmgr.simulate_apt(specs, env, recommends, runner)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "update_cache": {"type": "bool", "default": False},
            "purge": {"type": "bool", "default": False},
            "lock_timeout": {"type": "int", "default": 300},
            "proxy": {"type": "str", "default": ""},
            "install_recommends": {"type": "bool", "default": False},
            "simulate": {"type": "bool", "default": True},
            "manager": {"type": "str", "choices": ["auto", "apt", "dnf"], "default": "auto"},
            "probe": {"type": "bool", "default": False},
            "record": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    mgr = p["manager"]
    if mgr == "auto":
        mgr = pkgmgr.manager(gpu_detect.detect(None))
    env = pkgmgr.proxy_env(p["proxy"])
    installed = pkgmgr.installed_versions()
    if p["state"] == "present":
        todo = pkgmgr.missing(p["names"], mgr, installed)
    else:
        todo = [n for n in p["names"] if n in installed]
    result = {
        "changed": bool(todo),
        "missing": todo,
        "transaction": [],
        "lock_holders": [],
        "installable": True,
        "reason": "",
        "recorded": [],
    }
    if not todo:
        if p["record"] and p["state"] == "present" and not module.check_mode:
            try:  # a pending entry a killed run left: this run settles it
                result["recorded"] = pkgrecord.settle_pending(mgr)
            except errors.Failure as exc:
                module.fail_json(msg=exc.reason, gpu_install_error=errors.error_record(exc.code, exc.reason), **result)
        module.exit_json(**result)
    verb = "install" if p["state"] == "present" else ("purge" if p["purge"] and mgr == "apt" else "remove")
    # The diff's lines: the verb and each package (a removal names the installed version too).
    planned = [f"{verb} {n} {installed[n]}" if p["state"] == "absent" else f"{verb} {n}" for n in todo]
    try:
        if module.check_mode:
            if p["state"] == "present" and p["simulate"] and mgr == "apt":
                if p["update_cache"]:
                    result["transaction"] = _scratch_simulation(module, todo, env, p["install_recommends"])
                else:
                    result["transaction"] = pkgmgr.simulate_apt(todo, env, p["install_recommends"])
            elif p["state"] == "present" and p["simulate"] and mgr == "dnf":
                pkgmgr.dnf_install(todo, env, p["lock_timeout"], check=True)
            lines = [f"{verb} {t['name']} {t['version']}" for t in result["transaction"]] or planned
            result["diff"] = {"prepared": "\n".join(lines)}
            module.exit_json(**result)
        if p["state"] == "present":
            if p["update_cache"] and mgr == "apt":
                pkgmgr.apt_update(env, p["lock_timeout"])
            # The pending entry first: a run killed from here on is resolved by whoever reads the record next.
            if p["record"]:
                pkgrecord.begin(p["record"], todo, mgr)
            try:
                if mgr == "apt":
                    pkgmgr.apt_install(todo, env, p["install_recommends"], p["lock_timeout"])
                else:
                    pkgmgr.dnf_install(todo, env, p["lock_timeout"], check=False)
            finally:
                if p["record"]:  # a failed install may have brought some packages all the same
                    result["recorded"] = pkgrecord.finish(mgr)
        else:
            if mgr == "apt":
                pkgmgr.apt_remove(todo, p["lock_timeout"], purge=p["purge"])
            else:
                rc, out, err = pkgmgr.run(["dnf", "remove", "-y", "-q", *todo], None)
                if rc != 0:
                    raise pkgmgr.PackageError(errors.INTERNAL, f"dnf remove failed: {err.strip()[-300:]}")
            result["recorded"] = pkgrecord.forget(todo, mgr)
    except errors.Failure as exc:
        record = errors.error_record(exc.code, exc.reason)
        if module.check_mode and p["probe"]:
            result.update(changed=False, installable=False, reason=exc.reason)
            module.exit_json(**result)
        if module.check_mode:
            module.warn(exc.reason)
            result.update(changed=False, installable=False, reason=exc.reason, gpu_install_blocker=record)
            module.exit_json(**result)
        result.update(installable=False, reason=exc.reason)
        module.fail_json(msg=exc.reason, gpu_install_error=record, **result)
    result["diff"] = {"prepared": "\n".join(planned)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

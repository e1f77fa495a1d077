#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.nvidia_driver_runfile: NVIDIA's .run installer, checksum pinned."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_runfile
short_description: Install the NVIDIA driver from NVIDIA's .run installer, checksum pinned
version_added: 0.1.0
description:
  - Downloads the .run file from O(url) (NVIDIA's, or a mirror's) into a private temporary directory and
    checks its SHA-256 against O(sha256) before anything runs; a different checksum, or a download that
    fails, is refused with exit class 5 and the host is unchanged.
  - Then runs it (unpacking below C(/var/tmp), as C(/tmp) is often mounted noexec) silently with DKMS and
    without touching the X configuration
    (C(sh FILE --silent --dkms --no-questions --ui=none --no-x-check --no-nouveau-check -m=kernel-open|kernel)).
  - Idempotent - the checksum of the installer last run is recorded in O(state_file); the same checksum
    again changes nothing (and downloads nothing).
  - In check mode the file is downloaded and verified, and nothing runs.
author:
  - gpu-install maintainers
options:
  url:
    description: Where the .run file is (http, https or file URL).
    type: str
    required: true
  sha256:
    description: The pinned SHA-256 of the .run file (64 hex digits).
    type: str
    required: true
  kernel_modules:
    description: The kernel module flavour to build.
    type: str
    choices: [open, proprietary]
    default: open
  proxy:
    description: HTTP(S) proxy for the download; empty for none.
    type: str
    default: ""
  timeout:
    description: Seconds for the download to answer.
    type: int
    default: 60
  state_file:
    description: Where the checksum of the installer last run is recorded.
    type: path
    default: /var/lib/gpu-install/nvidia-driver-runfile.sha256
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Install the driver from NVIDIA's runfile
  gpu_install.nvidia.nvidia_driver_runfile:
    url: https://us.download.nvidia.com/tesla/550.163.01/NVIDIA-Linux-x86_64-550.163.01.run
    sha256: "{{ nvidia_driver_runfile_sha256 }}"
"""

RETURN = r"""
version:
  description: The driver version the file name carries (NVIDIA-Linux-x86_64-VERSION.run), or null.
  returned: always
  type: str
argv:
  description: The command line the installer runs with.
  returned: always
  type: list
  elements: str
sha256:
  description: The checksum verified.
  returned: always
  type: str
"""

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import driver, errors


def _fail(module, code, reason, **extra):
    module.fail_json(msg=reason, gpu_install_error=errors.error_record(code, reason), **extra)


def _download(url: str, dest: str, proxy: str, timeout: int) -> str:
    handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {})]
    opener = urllib.request.build_opener(*handlers)
    digest = hashlib.sha256()
    with opener.open(url, timeout=timeout) as response, open(dest, "wb") as out:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _record(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".gpu-install-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "sha256": {"type": "str", "required": True},
            "kernel_modules": {"type": "str", "choices": ["open", "proprietary"], "default": "open"},
            "proxy": {"type": "str", "default": ""},
            "timeout": {"type": "int", "default": 60},
            "state_file": {"type": "path", "default": "/var/lib/gpu-install/nvidia-driver-runfile.sha256"},
        },
        supports_check_mode=True,
    )
    p = module.params
    pinned = p["sha256"].strip().lower()
    version = driver.runfile_version(p["url"])
    result = {"version": version, "sha256": pinned, "argv": driver.runfile_argv("FILE", p["kernel_modules"])}
    if not re.fullmatch(r"[0-9a-f]{64}", pinned):
        _fail(module, errors.INVALID_INPUT, "nvidia_driver_runfile_sha256 must be 64 hexadecimal digits.", **result)
    try:
        with open(p["state_file"], encoding="ascii") as fh:
            if fh.read().split() == [pinned]:
                module.exit_json(changed=False, **result)
    except OSError:
        pass
    work = tempfile.mkdtemp(prefix="gpu-install-runfile-", dir="/var/tmp")
    try:
        path = os.path.join(work, os.path.basename(p["url"].split("?")[0]) or "nvidia.run")
        try:
            got = _download(p["url"], path, p["proxy"], p["timeout"])
        except (OSError, ValueError) as exc:
            _fail(
                module,
                errors.PACKAGE_SOURCE,
                f"The NVIDIA runfile could not be downloaded from {p['url']} ({exc}): check "
                "nvidia_driver_runfile_url and gpu_install_proxy.",
                **result,
            )
        if got != pinned:
            _fail(
                module,
                errors.PACKAGE_SOURCE,
                f"The NVIDIA runfile at {p['url']} has SHA-256 {got}, and nvidia_driver_runfile_sha256 pins {pinned}: "
                "it was refused before running; check the URL or the pinned checksum.",
                **result,
            )
        argv = driver.runfile_argv(path, p["kernel_modules"])
        result["argv"] = argv
        if module.check_mode:
            module.exit_json(changed=True, **result)
        # The installer unpacks below TMPDIR: /tmp is often mounted noexec, so it unpacks beside the file.
        env = dict(os.environ, TMPDIR=work)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=work, env=env)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip()[-500:]
            _fail(
                module,
                errors.INTERNAL,
                f"The NVIDIA runfile failed (exit {proc.returncode}); /var/log/nvidia-installer.log says why: {tail}",
                **result,
            )
        _record(p["state_file"], pinned + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()

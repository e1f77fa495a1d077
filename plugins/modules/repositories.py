#!/usr/bin/python
# Copyright: gpu-install contributors
# Apache License 2.0
"""Ansible module gpu_install.nvidia.repositories: the vendors' repositories, verified, then configured."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: repositories
short_description: Verify and configure NVIDIA's and Docker's package repositories
version_added: 0.1.0
description:
  - Configures the repositories a gpu-install run needs - C(cuda) (NVIDIA's CUDA repository, for
    cuda-drivers), C(nvidia_container_toolkit) and C(docker) (Docker CE) - from data, never from a
    downloaded repository file.
  - "Preflight first, before anything on the host changes: the key is fetched from its URL and its
    fingerprint checked against the pin; then the real apt (or dnf) fetches the repository's index
    into a scratch directory and verifies its signature with that key alone; the packages this run
    installs must resolve, and each of their files must answer. The host's own apt or dnf state is
    only read."
  - Then writes the keyring (only the pinned key; binary in /etc/apt/keyrings for apt, armoured in
    /etc/pki/rpm-gpg for dnf) and a deb822 C(.sources) or dnf C(.repo) file, each atomically, mode
    0644, owned by root. Same bytes, no change. Nothing of the user's is removed.
  - Every failure carries C(gpu_install_error) - exit code 5 (package source) with one sentence naming
    the repository, its URL and the fix; 3 for a platform a vendor does not publish for; 4 for
    malformed settings.
  - The caller runs C(apt-get update) (or C(dnf makecache)) when C(cache_update_needed) is true.
author:
  - gpu-install maintainers
options:
  use:
    description:
      - The repository ids this run needs (C(cuda), C(nvidia_container_toolkit), C(docker), C(epel)). Empty does
        nothing.
    type: list
    elements: str
    required: true
  packages:
    description:
      - Repository id to the package names preflight checks (the driver's plan gives them as its
        C(repository_packages)). Ids not given check the packages gpu-install installs from that repository
        (C(cuda-drivers), C(nvidia-container-toolkit), C(docker-ce docker-ce-cli containerd.io), C(dkms)).
    type: dict
    default: {}
  overrides:
    description:
      - The C(gpu_install_repositories) setting - repository id to C(url) (replaces the vendor's base,
        the vendor's layout below it is kept), C(key_url) (default - the vendor's key path under
        C(url)) and C(fingerprint) (the pin; the user's wins over the built-in one).
    type: dict
    default: {}
  proxy:
    description:
      - HTTP(S) proxy (C(gpu_install_proxy)) for the key download, the preflight and the written
        configuration (dnf C(proxy=), apt per-host C(Acquire::http::Proxy)).
    type: str
    default: ""
  facts:
    description:
      - The host's os facts as C(gpu_facts) returns them (C(ansible_facts.gpu_install.os)); by default
        they are detected.
    type: dict
  preflight_only:
    description:
      - Verify only; write nothing, and report the files that would be written.
    type: bool
    default: false
  timeout:
    description:
      - Seconds for each key download and package-file check.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    description: Runs the whole preflight (it only reads), then reports the files it would write.
  diff_mode:
    support: full
    description: A before/after diff per file; a binary keyring is shown by its fingerprint.
notes:
  - The logic lives in the module_utils C(repos) and C(openpgp), which the gpu-install CLI imports too.
  - It never uses apt-key, trusted=yes, python3-apt or python3-debian (minimal hosts lack them).
"""

EXAMPLES = r"""
- name: Configure the CUDA and container toolkit repositories
  gpu_install.nvidia.repositories:
    use: [cuda, nvidia_container_toolkit]
    facts: "{{ ansible_facts.gpu_install.os }}"
  register: repos

- name: Use an internal mirror that keeps NVIDIA's signatures
  gpu_install.nvidia.repositories:
    use: [cuda]
    overrides:
      cuda:
        url: https://artifactory.example.com/nvidia-cuda

- name: Use a mirror that re-signs with its own key
  gpu_install.nvidia.repositories:
    use: [nvidia_container_toolkit]
    overrides:
      nvidia_container_toolkit:
        url: https://aptly.example.com/libnvidia-container
        key_url: https://aptly.example.com/mirror-key.asc
        fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567

- name: Refresh apt's lists after a change
  ansible.builtin.command: apt-get update
  when: repos.cache_update_needed
  changed_when: true
"""

RETURN = r"""
unavailable:
  description: In check mode, true when a repository failed its preflight; the plan goes on.
  returned: in check mode, when preflight failed
  type: bool
gpu_install_blocker:
  description: In check mode, the classified error a real run would fail with (code 5, or 3 or 4).
  returned: in check mode, when preflight failed
  type: dict
repositories:
  description: The repositories configured (or that would be), as resolved for this host.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The repository id.
      type: str
      sample: cuda
    url:
      description: The base (the vendor's, or the mirror's).
      type: str
      sample: https://developer.download.nvidia.com/compute/cuda/repos
    uri:
      description: The apt URI or dnf baseurl (the base plus the vendor's layout).
      type: str
      sample: https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/
    key_url:
      description: Where the key was fetched.
      type: str
    fingerprint:
      description: The pinned fingerprint the key matched.
      type: str
      sample: EB693B3035CD5710E231E123A4B469963BF863CC
    keyring:
      description: The keyring file.
      type: str
      sample: /etc/apt/keyrings/gpu-install-cuda.gpg
    source:
      description: The sources or repo file.
      type: str
      sample: /etc/apt/sources.list.d/gpu-install-cuda.sources
    packages:
      description: The packages preflight checked.
      type: list
      elements: str
files:
  description: Every file gpu-install owns for these repositories.
  returned: always
  type: list
  elements: str
changed_files:
  description: The files written (in check mode or with O(preflight_only), that would be written).
  returned: always
  type: list
  elements: str
cache_update_needed:
  description: True when a file was written and the package lists must be refreshed.
  returned: always
  type: bool
preflight:
  description: What preflight checked, per repository (C(index), C(packages), C(checked_uris)).
  returned: always
  type: dict
gpu_install_error:
  description: On failure, the exit code (5, 3 or 4) and the one-sentence reason.
  returned: failure
  type: dict
  sample: {"code": 5, "reason": "The key of the cuda repository at https://... has fingerprint ..."}
"""

from typing import Any, Dict, List

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_install.nvidia.plugins.module_utils import errors, repos


def _summary(repo: repos.Repo) -> Dict[str, Any]:
    return {
        "id": repo.id,
        "url": repo.url,
        "uri": repo.uri,
        "key_url": repo.key_url,
        "fingerprint": repo.fingerprint,
        "keyring": repo.keyring_path,
        "source": repo.source_path,
        "packages": list(repo.packages),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "use": {"type": "list", "elements": "str", "required": True},
            "packages": {"type": "dict", "default": {}},
            "overrides": {"type": "dict", "default": {}},
            "proxy": {"type": "str", "default": ""},
            "facts": {"type": "dict", "default": None},
            "preflight_only": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    params = module.params
    result: Dict[str, Any] = {
        "changed": False,
        "repositories": [],
        "files": [],
        "changed_files": [],
        "cache_update_needed": False,
        "preflight": {},
    }
    use: List[str] = list(dict.fromkeys(params["use"] or []))
    if not use:
        module.exit_json(**result)

    def fail(code: int, reason: str) -> None:
        record = errors.error_record(code, reason)
        if module.check_mode:
            # A plan goes on past a package source it cannot reach, marks it, and ends with its exit code.
            module.warn(reason)
            result["unavailable"] = True
            module.exit_json(msg=reason, gpu_install_blocker=record, **result)
        module.fail_json(msg=reason, gpu_install_error=record, **result)

    facts = params["facts"]
    if not facts:
        from ansible_collections.gpu_install.nvidia.plugins.module_utils.gpu_detect import detect

        facts = detect()["os"]
    packages = params["packages"] or {}
    try:
        chosen = []
        for repo_id in use:
            wanted = packages.get(repo_id)
            if wanted is not None and not isinstance(wanted, list):
                wanted = [wanted]
            if wanted is None:
                wanted = list(repos.packages_for(repo_id)) if repo_id in repos.VENDORS else []
            chosen.append(repos.resolve(repo_id, facts, params["overrides"], [str(p) for p in wanted]))
        result["repositories"] = [_summary(r) for r in chosen]
        keys, report = repos.preflight(chosen, params["proxy"], float(params["timeout"]))
        result["preflight"] = report
        files = repos.desired_files(chosen, keys, params["proxy"])
    except repos.RepoError as exc:
        fail(exc.code, exc.reason)
        return
    result["files"] = [path for path, _ in files]
    diffs = []
    pending = []
    for path, content in files:
        before = repos.read_bytes(path)
        if before == content:
            continue
        pending.append((path, content))
        diffs.append(
            {
                "before_header": path if before is not None else "/dev/null",
                "after_header": path,
                "before": repos.describe(path, before),
                "after": repos.describe(path, content),
            }
        )
    result["changed_files"] = [path for path, _ in pending]
    if params["preflight_only"]:
        module.exit_json(**result)
    if not module.check_mode:
        for path, content in pending:
            try:
                repos.write_atomic(path, content, 0o644)
            except OSError as exc:
                fail(errors.HOST_ERROR, f"gpu-install could not write {path} ({exc.strerror or exc}): check the disk.")
    result["changed"] = bool(pending)
    result["cache_update_needed"] = bool(pending)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()

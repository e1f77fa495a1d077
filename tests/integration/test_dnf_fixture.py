"""The dnf fixture behaves, for the real dnf, like the repositories it stands in for, on what driver plans rely on.

FIXTURE: tests/fixtures/dnf_repos.py builds stand-ins of NVIDIA's CUDA repository (with module metadata), EPEL
and a Rocky-like distribution; these tests run Debian's dnf 4 against them in scratch installroots and read back
what rpm installed there.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.dnf_repos import (  # noqa: E402
    CUDA_DIRS,
    DRIVER_BRANCHES,
    STAND_IN,
    DnfRepos,
    branch_evr,
    newest_branch,
)


@pytest.fixture
def repos(dnf_served):
    return dnf_served


def branch_of(evra: str) -> str:
    """'3:580.105.08-1.el9.x86_64' -> '580'."""
    return evra.split(":", 1)[1].split(".", 1)[0]


def repo_enabled(root, repo_id: str) -> str:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(root.path.glob("etc/yum.repos.d/*.repo"))
    return conf[repo_id]["enabled"]


def with_epel_and_crb(root):
    root.add_epel_repo()
    crb = "powertools" if root.distro == "el8" else "crb"
    root.dnf("config-manager", "--set-enabled", crb)
    return root


def test_modular_driver_packages_stay_hidden_until_a_stream_is_enabled(repos, tmp_path):
    root = with_epel_and_crb(repos.root(tmp_path, "el9"))
    root.add_cuda_repo()
    proc = root.dnf("install", "-y", "nvidia-open", check=False)
    assert proc.returncode != 0
    assert "filtered out by modular filtering" in proc.stdout + proc.stderr
    assert root.installed() == {}


@pytest.mark.parametrize("distro", ["el8", "el9", "amzn2023"])
def test_each_module_platform_hides_then_offers_one_branch(repos, tmp_path, distro):
    root = repos.root(tmp_path, distro, distro_repos=False)
    root.add_cuda_repo()
    hidden = root.dnf("install", "-y", "nvidia-driver", check=False)
    assert hidden.returncode != 0 and "modular filtering" in hidden.stdout + hidden.stderr
    root.dnf("module", "enable", "-y", "nvidia-driver:580-open")
    root.dnf("install", "-y", "nvidia-driver")
    assert root.installed() == {"nvidia-driver": f"{branch_evr(root.cuda_dir, '580')}.x86_64"}


@pytest.mark.parametrize(("distro", "branch"), [("el9", "580"), ("el8", "575")])
def test_enabling_a_branch_open_stream_installs_that_branch(repos, tmp_path, distro, branch):
    root = with_epel_and_crb(repos.root(tmp_path, distro))
    root.add_cuda_repo()
    root.dnf("module", "enable", "-y", f"nvidia-driver:{branch}-open")
    root.dnf("install", "-y", "nvidia-open")
    got = root.installed()
    assert newest_branch(root.cuda_dir) != branch  # a newer branch is there and was not taken
    for name in ("nvidia-open", "kmod-nvidia-open-dkms", "nvidia-driver"):
        assert got[name] == f"{branch_evr(root.cuda_dir, branch)}.x86_64"
    assert "cuda-drivers" not in got and "kmod-nvidia-latest-dkms" not in got
    assert {"dkms", "kernel-devel", "gpu-install-crb-stand-in-dep"} <= set(got)
    state = (root.path / "etc/dnf/modules.d/nvidia-driver.module").read_text()
    assert f"stream={branch}-open" in state and "state=enabled" in state


def test_open_dkms_stream_gives_the_newest_branch_and_its_fabric_manager_and_nscq_profile(repos, tmp_path):
    root = with_epel_and_crb(repos.root(tmp_path, "el9"))
    root.add_cuda_repo()
    root.dnf("module", "install", "-y", "nvidia-driver:open-dkms/fm")
    got = root.installed()
    newest = newest_branch(root.cuda_dir)
    assert branch_of(got["nvidia-open"]) == newest
    assert branch_of(got[DRIVER_BRANCHES[newest]["fabric_manager"]]) == newest
    assert branch_of(got[DRIVER_BRANCHES[newest]["nscq"]]) == newest


@pytest.mark.parametrize("distro", ["el8", "el9", "el10"])
def test_dkms_from_epel_resolves_only_once_crb_is_enabled(repos, tmp_path, distro):
    root = repos.root(tmp_path, distro)
    root.add_epel_repo()
    proc = root.dnf("install", "-y", "dkms", check=False)
    assert proc.returncode != 0
    assert "gpu-install-crb-stand-in-dep" in proc.stdout + proc.stderr
    crb = "powertools" if distro == "el8" else "crb"
    assert repo_enabled(root, crb) == "0"  # as the distribution ships it
    root.dnf("config-manager", "--set-enabled", crb)
    assert repo_enabled(root, crb) == "1"
    root.dnf("install", "-y", "dkms")
    assert {"dkms", "kernel-devel", "gpu-install-crb-stand-in-dep"} <= set(root.installed())


def test_a_versionlock_entry_in_the_root_holds_nvidia_open_on_rhel10_below_the_newest_branch(repos, tmp_path):
    assert not CUDA_DIRS["rhel10"]["modules"]  # no streams there: the lock is what holds a branch
    free = with_epel_and_crb(repos.root(tmp_path / "free", "el10"))
    free.add_cuda_repo()
    free.dnf("install", "-y", "nvidia-open")
    newest = newest_branch("rhel10")
    assert branch_of(free.installed()["nvidia-open"]) == newest

    held = with_epel_and_crb(repos.root(tmp_path / "held", "el10"))
    held.add_cuda_repo()
    older = next(b for b in sorted(DRIVER_BRANCHES, key=int, reverse=True) if b != newest)
    entry = f"nvidia-open-{branch_evr('rhel10', older)}.*"
    held.lock(entry)
    assert entry in held.dnf("versionlock", "list").stdout.splitlines()  # the plugin reads the root's list
    held.dnf("install", "-y", "nvidia-open")
    got = held.installed()
    assert branch_of(got["nvidia-open"]) == older
    assert branch_of(got["nvidia-driver"]) == older  # the metapackage's = EVR requires follow the lock


def test_an_aarch64_root_installs_the_sbsa_packages(repos, tmp_path):
    root = with_epel_and_crb(repos.root(tmp_path, "el9", arch="aarch64"))
    assert root.add_cuda_repo().read_text().count("/cuda/rhel9/sbsa") == 1
    root.dnf("module", "enable", "-y", "nvidia-driver:latest-dkms")
    root.dnf("install", "-y", "cuda-drivers")
    got = root.installed()
    assert got["cuda-drivers"].endswith(".aarch64") and got["kernel-devel"].endswith(".aarch64")
    assert {evra.rsplit(".", 1)[1] for evra in got.values()} == {"aarch64", "noarch"}


def test_repository_metadata_signed_by_another_key_is_refused(tmp_path):
    with DnfRepos(tmp_path / "repos") as served:
        root = served.root(tmp_path / "root", "el9", distro_repos=False)
        root.add_cuda_repo()
        root.dnf("makecache", "-y")  # the fixture's own signature passes
        other = served.sign_with_other_key(served.cuda_url("rhel9", "x86_64"))
        assert other != served.fingerprint
        stale = served.root(tmp_path / "fresh", "el9", distro_repos=False)
        stale.add_cuda_repo()
        proc = stale.dnf("makecache", "-y", check=False)
    assert proc.returncode != 0
    assert "repomd.xml GPG signature verification error" in proc.stdout + proc.stderr


def test_every_package_says_it_is_a_stand_in(repos, tmp_path):
    out = subprocess.run(
        ["sh", "-c", f"rpm -qp --nosignature --qf '%{{SUMMARY}}\\n' {repos.www}/*/*/*/*.rpm {repos.www}/*/*/*/*/*.rpm"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) > 100 and set(out) == {STAND_IN}

"""The driver plan's package names, holds and Ubuntu probes, checked against the real apt and dpkg.

No test host is needed: apt-get, apt-cache and dpkg-query of this machine run in a scratch apt root (its own
sources, lists, cache, preferences and dpkg status below a temporary directory, chosen with APT_CONFIG), so the
machine's own apt state is neither read nor written. Package installs are simulated (``apt-get install -s``).

FIXTURES:

* tests/fixtures/mirror.py stands in for NVIDIA's CUDA apt repository (unreachable from here): signed, served on
  loopback, with stand-ins of driver branches 550 to 595 named per branch as NVIDIA names them (suffixed
  metapackages before 590; unsuffixed ones and nvidia-driver-pinning-B from 590). The scratch root's source and
  keyring are the ones gpu-install writes (repos.resolve, repos.fetch_key, repos.render_deb822).
* ``ubuntu_archive`` below stands in for Ubuntu's archive: a Packages index of -server driver and precompiled
  module names (no package files), and a dpkg status of an Ubuntu 24.04 host with the HWE kernel installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))
from fixtures.mirror import DRIVER_BRANCH_VERSIONS, PINNING_DIR, Mirror, tools_missing  # noqa: E402
from gpu_install.collection import module_utils  # noqa: E402

driver = module_utils("driver")
pkgmgr = module_utils("pkgmgr")
repos = module_utils("repos")

H100 = {"pci_address": "0000:01:00.0", "device_id": "0x2330", "name": "H100 80GB HBM3"}
NVSWITCH = {"pci_address": "0000:05:00.0", "device_id": "0x22a3"}
HWE_RELEASE = "6.11.0-29-generic"


def ubuntu_facts(**extra: Any) -> dict[str, Any]:
    """Facts of an Ubuntu 24.04 host with an H100, running the HWE kernel (gpu_detect's shape)."""
    facts: dict[str, Any] = {
        "os": {"id": "ubuntu", "version_id": "24.04", "family": "debian", "arch": "x86_64", "name": "Ubuntu 24.04",
               "like": {"id": "ubuntu", "version_id": "24.04"}},
        "gpus": [H100],
        "nvswitches": [],
        "driver": {"loaded": False, "version": None, "flavour": None, "package": None},
        "nouveau_loaded": False,
        "secure_boot": False,
        "kernel": {"release": HWE_RELEASE, "headers_installed": True},
    }  # fmt: skip
    facts.update(extra)
    return facts


@pytest.fixture(autouse=True)
def _apt_tools():
    missing = tools_missing()
    if missing:
        pytest.fail(f"these tests need {', '.join(missing)}: scripts/test installs them")


# -- a scratch apt root -------------------------------------------------------------------------------------------
@dataclass
class AptRoot:
    """apt and dpkg state below one directory; ``env`` points apt (APT_CONFIG) and dpkg (DPKG_ADMINDIR) at it."""

    root: Path

    def __post_init__(self) -> None:
        for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "etc/trusted.gpg.d", "keys",
                    "state/lists/partial", "cache/archives/partial", "log", "dpkg/updates", "dpkg/info"):  # fmt: skip
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/sources.list").write_text("")
        (self.root / "dpkg/status").touch()
        options = {
            "Dir::Etc": self.root / "etc",
            "Dir::Etc::SourceList": self.root / "etc/sources.list",
            "Dir::Etc::SourceParts": self.root / "etc/sources.list.d",
            "Dir::Etc::Preferences": self.root / "etc/preferences",
            "Dir::Etc::PreferencesParts": self.root / "etc/preferences.d",
            "Dir::Etc::Parts": self.root / "etc/apt.conf.d",
            "Dir::Etc::Trusted": self.root / "etc/trusted.gpg",
            "Dir::Etc::TrustedParts": self.root / "etc/trusted.gpg.d",
            "Dir::State": self.root / "state",
            "Dir::State::Lists": self.root / "state/lists",
            "Dir::State::status": self.root / "dpkg/status",
            "Dir::Cache": self.root / "cache",
            "Dir::Log": self.root / "log",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "true",
            # The scratch directories are below pytest's root-only tmp_path, which apt's _apt user cannot enter.
            "APT::Sandbox::User": "root",
        }
        text = repos.APT_SCRATCH_CONF + "".join(f'{key} "{value}";\n' for key, value in options.items())
        self.conf = self.root / "apt.conf"
        self.conf.write_text(text)
        self.env = {"APT_CONFIG": str(self.conf), "DPKG_ADMINDIR": str(self.root / "dpkg"), "LC_ALL": "C"}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **self.env}, check=False)

    def add_source(self, name: str, text: str) -> None:
        (self.root / "etc/sources.list.d" / f"{name}.sources").write_text(text)

    def update(self) -> None:
        proc = self.run("apt-get", "update", "-q")
        assert proc.returncode == 0 and "W: " not in proc.stderr, proc.stdout + proc.stderr

    def prefer(self, name: str, text: str) -> Path:
        path = self.root / "etc/preferences.d" / name
        path.write_text(text)
        return path

    def simulate(self, *packages: str) -> dict[str, str]:
        """What ``apt-get install`` would install: name -> version (apt's ``Inst`` lines)."""
        proc = self.run("apt-get", "install", "-s", "-q", "--no-install-recommends", *packages)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return {m.group(1): m.group(3) for m in map(INST.match, proc.stdout.splitlines()) if m}

    def candidate(self, package: str) -> str:
        """The version ``apt-get install PACKAGE`` would pick (``apt-cache policy``'s Candidate)."""
        proc = self.run("apt-cache", "policy", package)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        found = re.search(r"^  Candidate: (\S+)$", proc.stdout, re.M)
        assert found, proc.stdout
        return found.group(1)

    def priorities(self, package: str) -> dict[str, int]:
        """``apt-cache policy``'s version table: version -> the priority apt gives it."""
        proc = self.run("apt-cache", "policy", package)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return {m.group(1): int(m.group(2)) for m in map(VERSION_ROW.match, proc.stdout.splitlines()) if m}


INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+)")
VERSION_ROW = re.compile(r"^ {5}(?:\*\*\* )?(\S+) (-?\d+)$")


# -- NVIDIA's CUDA repository (the signed mirror fixture) ---------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """The mirror fixture as NVIDIA's ubuntu2404 CUDA repository, with every driver branch it stands in for."""
    mirror = Mirror(tmp_path_factory.mktemp("mirror"), distro="ubuntu", version="24.04", codename="noble")
    mirror.add_driver_branches()
    with mirror:
        yield mirror


def add_cuda_source(apt: AptRoot, mirror: Mirror) -> None:
    """The cuda repository's source and keyring as gpu-install writes them, with the mirror set as a user sets it."""
    url = mirror.url("cuda")
    overrides = {"cuda": {"url": url, "key_url": f"{url}/ubuntu2404/x86_64/3bf863cc.pub",
                          "fingerprint": mirror.key.fingerprint}}  # fmt: skip
    repo = repos.resolve("cuda", ubuntu_facts(), overrides)
    keyring = apt.root / "keys" / Path(repo.keyring_path).name
    keyring.write_bytes(repos.keyring_bytes(repo, repos.fetch_key(repo)))
    apt.add_source("gpu-install-cuda", repos.render_deb822(repo, keyring=str(keyring)))


@pytest.fixture
def cuda_apt(tmp_path: Path, cuda_mirror: Mirror) -> AptRoot:
    apt = AptRoot(tmp_path / "apt")
    add_cuda_source(apt, cuda_mirror)
    apt.update()
    return apt


def cuda_plan(branch: str, **extra: Any) -> dict[str, Any]:
    plan = driver.plan(ubuntu_facts(**extra), {"source": "auto", "branch": branch})
    assert plan["refusal"] is None, plan["refusal"]
    return plan


def from_cuda(plan: dict[str, Any]) -> list[str]:
    """The plan's packages that NVIDIA's repository serves (dkms comes from the distribution's archive, which the
    scratch root does not hold)."""
    return [p for p in plan["packages"] if p != driver.DKMS_PACKAGE["apt"]]


def branch_of_all(installed: dict[str, str]) -> set[str | None]:
    return {driver.branch_of(version) for version in installed.values()}


def test_a_branch_before_590_is_installed_and_held_by_its_metapackage_and_gpu_installs_pin(cuda_apt):
    plan = cuda_plan("570")
    assert plan["pinning"] == [] and plan["hold"]["path"] == driver.HOLD_APT_PATH
    newest = max(DRIVER_BRANCH_VERSIONS, key=int)
    assert newest != "570"  # newer branches are in the repository

    # Without the pin, a package every branch shares goes to the newest branch, and apt cannot keep 570's
    # metapackage with it: an install that names such a package (as a user's later install may) fails.
    shared = ("nvidia-driver", "libnvidia-ml1")
    assert cuda_apt.candidate("nvidia-driver") == DRIVER_BRANCH_VERSIONS[newest]
    assert cuda_apt.run("apt-get", "install", "-s", "-q", *from_cuda(plan), *shared).returncode != 0

    cuda_apt.prefer(Path(driver.HOLD_APT_PATH).name, plan["hold"]["content"])
    installed = cuda_apt.simulate(*from_cuda(plan), *shared)
    assert set(from_cuda(plan)) | set(shared) <= set(installed)
    assert branch_of_all(installed) == {"570"}, installed
    assert cuda_apt.candidate("nvidia-driver") == DRIVER_BRANCH_VERSIONS["570"]


def extract_pinning(apt: AptRoot, mirror: Mirror, name: str) -> list[Path]:
    """What installing the pinning package does to apt: its preferences file lands in preferences.d.

    The package is unpacked with dpkg-deb -x (a real dpkg install into a scratch root would need a whole
    system there); only its PINNING_DIR files are taken, into the scratch preferences.d.
    """
    deb = next(mirror.apt["cuda"].pool.glob(f"{name}_*.deb"))
    unpacked = apt.root / "unpacked" / name
    unpacked.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    files = sorted((unpacked / PINNING_DIR).iterdir())
    for path in files:
        apt.prefer(path.name, path.read_text())
    return files


def test_from_590_the_pinning_package_installed_first_keeps_the_unsuffixed_driver_on_its_branch(cuda_apt, cuda_mirror):
    plan = cuda_plan("590")
    assert plan["hold"] is None  # no pin of gpu-install's: NVIDIA's package holds the branch
    assert plan["pinning"] == ["nvidia-driver-pinning-590"]
    assert plan["repository_packages"]["cuda"][0] == "nvidia-driver-pinning-590"  # first, before the driver

    # Without the pinning package, the unsuffixed metapackage is the newest branch's.
    assert branch_of_all(cuda_apt.simulate(*from_cuda(plan))) == {"595"}

    # The pinning package's own transaction: it installs on its own, from the repository.
    assert list(cuda_apt.simulate(*plan["pinning"])) == plan["pinning"]
    assert extract_pinning(cuda_apt, cuda_mirror, plan["pinning"][0])
    installed = cuda_apt.simulate(*from_cuda(plan))
    assert installed["nvidia-open"] == DRIVER_BRANCH_VERSIONS["590"]
    assert branch_of_all(installed) == {"590"}, installed


@pytest.mark.parametrize("branch", ["570", "580", "590", "595"])
def test_fabric_manager_names_of_the_plan_resolve_to_the_drivers_branch(cuda_apt, cuda_mirror, branch):
    plan = cuda_plan(branch, nvswitches=[NVSWITCH])
    if plan["pinning"]:
        extract_pinning(cuda_apt, cuda_mirror, plan["pinning"][0])
    else:
        cuda_apt.prefer(Path(driver.HOLD_APT_PATH).name, plan["hold"]["content"])
    installed = cuda_apt.simulate(*from_cuda(plan), *plan["fabricmanager"])
    assert set(plan["fabricmanager"]) <= set(installed)
    assert branch_of_all(installed) == {branch}, installed


# -- Ubuntu's archive (a Packages index fixture) and an Ubuntu host's dpkg status ----------------------------------
UBUNTU_DRIVER = "580.159.03-0ubuntu0.24.04.1"  # stand-in versions, in Ubuntu's spelling
UBUNTU_MODULES = "6.8.0-90.91"
HWE_MODULES = "6.11.0-29.29~24.04.1"
# Package -> version. 580 is the newest -server branch offered whole for the generic-hwe-24.04 flavour: 595-server
# has no modules for it, 590 (not -server) is no -server branch.
ARCHIVE = {
    "nvidia-headless-no-dkms-570-server-open": "570.195.03-0ubuntu0.24.04.1",
    "nvidia-headless-no-dkms-580-server-open": UBUNTU_DRIVER,
    "nvidia-headless-no-dkms-580-server": UBUNTU_DRIVER,
    "nvidia-headless-no-dkms-595-server-open": "595.71.05-0ubuntu0.24.04.1",
    "nvidia-headless-no-dkms-590-open": "590.48.01-0ubuntu0.24.04.1",
    "nvidia-utils-580-server": UBUNTU_DRIVER,
    "linux-modules-nvidia-570-server-open-generic-hwe-24.04": HWE_MODULES,
    "linux-modules-nvidia-580-server-open-generic-hwe-24.04": HWE_MODULES,
    "linux-modules-nvidia-580-server-open-6.11.0-29-generic": HWE_MODULES,
    "linux-modules-nvidia-580-server-open-generic": UBUNTU_MODULES,
    "linux-modules-nvidia-580-server-open-aws": "6.8.0-1040.42",
    "linux-modules-nvidia-595-server-open-generic": UBUNTU_MODULES,
    "linux-modules-nvidia-595-server-open-aws": "6.8.0-1040.42",
    "linux-modules-nvidia-590-open-generic-hwe-24.04": HWE_MODULES,
}
# Installed kernel packages: name -> (dpkg status, version, Depends). Both generic and HWE metapackages are installed;
# the HWE kernel is the newest; linux-image-aws was removed (its configuration kept), so it is no installed kernel.
KERNELS = {
    "linux-image-6.8.0-90-generic": ("install ok installed", "6.8.0-90.91", ""),
    "linux-image-generic": ("install ok installed", "6.8.0-90.91", "linux-image-6.8.0-90-generic"),
    "linux-image-6.11.0-29-generic": ("install ok installed", HWE_MODULES, ""),
    "linux-image-generic-hwe-24.04": ("install ok installed", HWE_MODULES, "linux-image-6.11.0-29-generic"),
    "linux-image-aws": ("deinstall ok config-files", "6.14.0.1010.10", "linux-image-6.14.0-1010-aws"),
}


def stanza(name: str, version: str, depends: str = "", **fields: str) -> str:
    lines = [f"Package: {name}", *(f"{k}: {v}" for k, v in fields.items()), "Architecture: amd64",
             f"Version: {version}", *([f"Depends: {depends}"] if depends else []),
             "Maintainer: gpu-install tests <tests@fixture.invalid>",
             f"Description: gpu-install test fixture: stand-in for Ubuntu's {name}"]  # fmt: skip
    return "\n".join(lines) + "\n\n"


@pytest.fixture
def ubuntu_apt(tmp_path: Path) -> AptRoot:
    """FIXTURE: a scratch apt root with an Ubuntu-like archive (a flat file: repository, Packages index only) and an
    Ubuntu 24.04 host's installed kernels in its dpkg status."""
    apt = AptRoot(tmp_path / "apt")
    archive = tmp_path / "ubuntu-archive"
    archive.mkdir()
    (archive / "Packages").write_text(
        "".join(stanza(n, v, Filename=f"pool/{n}_{v}_amd64.deb", Size="1") for n, v in ARCHIVE.items())
    )
    release = subprocess.run(["apt-ftparchive", "release", "."], cwd=archive, capture_output=True, check=True)
    (archive / "Release").write_bytes(release.stdout)
    apt.add_source("ubuntu", f"Types: deb\nURIs: file:{archive}\nSuites: ./\nTrusted: yes\n")
    (apt.root / "dpkg/status").write_text("".join(stanza(n, v, d, Status=s) for n, (s, v, d) in KERNELS.items()))
    apt.update()
    return apt


def probe(apt: AptRoot, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The plan module's probes (nvidia_driver_plan._probes), run as it runs them, against the scratch root."""
    for key, value in apt.env.items():
        monkeypatch.setenv(key, value)
    return {
        "kernel_images": pkgmgr.dpkg_depends(driver.KERNEL_METAPACKAGES),
        "apt_names": pkgmgr.apt_names(driver.UBUNTU_PROBE_PREFIXES),
    }


def test_ubuntu_probes_read_apt_and_dpkg_and_the_plan_picks_the_newest_branch_whole_for_the_hwe_kernel(
    ubuntu_apt, monkeypatch
):
    probes = probe(ubuntu_apt, monkeypatch)
    # dpkg's installed kernel metapackages only (not the removed one), with their Depends.
    assert probes["kernel_images"]["linux-image-generic-hwe-24.04"] == "linux-image-6.11.0-29-generic"
    assert "linux-image-aws" not in probes["kernel_images"]
    assert set(probes["apt_names"]) == set(ARCHIVE) - {"nvidia-utils-580-server"}

    plan = driver.plan(ubuntu_facts(), {"source": "distro"}, probes=probes)
    assert plan["refusal"] is None, plan["refusal"]
    assert plan["branch"] == "580"
    assert "linux-modules-nvidia-580-server-open-generic-hwe-24.04" in plan["packages"]
    assert plan["running_kernel_packages"][-1] == f"linux-modules-nvidia-580-server-open-{HWE_RELEASE}"
    # Every package of the plan is one the archive offers, and apt installs them together.
    assert set(ubuntu_apt.simulate(*plan["packages"])) == set(plan["packages"])


def test_the_branch_pin_raises_the_drivers_packages_and_leaves_kernel_versioned_modules_at_the_archives_priority(
    ubuntu_apt, cuda_mirror, monkeypatch
):
    add_cuda_source(ubuntu_apt, cuda_mirror)
    ubuntu_apt.update()
    plan = driver.plan(ubuntu_facts(), {"source": "distro"}, probes=probe(ubuntu_apt, monkeypatch))
    assert plan["branch"] == "580" and plan["hold"]["path"] == driver.HOLD_APT_PATH
    ubuntu_apt.prefer(Path(driver.HOLD_APT_PATH).name, plan["hold"]["content"])

    # The driver's packages of branch 580, Ubuntu's and NVIDIA's, are pinned (1000); other branches are not.
    assert ubuntu_apt.priorities("nvidia-headless-no-dkms-580-server-open") == {UBUNTU_DRIVER: 1000}
    assert ubuntu_apt.priorities("nvidia-open-580") == {DRIVER_BRANCH_VERSIONS["580"]: 1000}
    assert ubuntu_apt.priorities("nvidia-driver")[DRIVER_BRANCH_VERSIONS["580"]] == 1000
    assert ubuntu_apt.priorities("nvidia-driver")[DRIVER_BRANCH_VERSIONS["595"]] == 500
    # The precompiled modules carry the kernel's version (6.8.0-90.91): the pin leaves them at the archive's
    # priority, so they stay installable and follow new kernels by their metapackage's name. (apt 2.6 gives the
    # same priorities where the pin's Package line also names linux-modules-nvidia-*: a version pin no version
    # matches is inert. What this checks is the outcome, not which names the pin lists.)
    assert ubuntu_apt.priorities("linux-modules-nvidia-580-server-open-generic") == {UBUNTU_MODULES: 500}
    assert ubuntu_apt.priorities("linux-modules-nvidia-580-server-open-generic-hwe-24.04") == {HWE_MODULES: 500}
    installed = ubuntu_apt.simulate(*plan["packages"])
    assert installed["linux-modules-nvidia-580-server-open-generic-hwe-24.04"] == HWE_MODULES

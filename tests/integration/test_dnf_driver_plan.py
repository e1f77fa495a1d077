"""The driver plan's dnf steps install the right driver, as the REAL dnf resolves them.

Per case: a host tree holding the distribution's os-release, an H100 (and NVSwitches) in sysfs and the running
kernel's release; ``gpu_detect.detect(root)`` makes its facts; the Ansible module
``gpu_install.nvidia.nvidia_driver_plan`` plans from them; the plan's dnf steps are carried out, in the role's
order (roles/nvidia_driver/tasks/install.yml), in a scratch installroot of the dnf FIXTURE
(tests/fixtures/dnf_repos.py: signed stand-ins of NVIDIA's CUDA repository, EPEL and the distribution); and what rpm
installed there is read back.

The os-release texts are the project's detection corpus (tests/unit/corpus/os-release/: rocky-9.4, rocky-8.9,
rhel-10.0, amzn-2023), which its README says were written from the distributions' published files; no vendor page
was read for them in this file's making, so they are cited as the corpus, not as the vendors' pages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(CHECKOUT / "installer"))
from fixtures.dnf_repos import (  # noqa: E402
    CUDA_DIR_OF,
    DRIVER_BRANCHES,
    DnfRepos,
    DnfRoot,
    newest_branch,
)
from gpu_install.collection import collections_path, module_utils  # noqa: E402

driver = module_utils("driver")
gpu_detect = module_utils("gpu_detect")
repos_mod = module_utils("repos")

CORPUS = CHECKOUT / "tests/unit/corpus/os-release"
H100 = "0x2330"  # a Hopper device id in driver.ARCHITECTURES (open modules recommended)
NVSWITCH = "0x22a3"  # any NVIDIA device of the NVSwitch class (0x0680) counts
SECURE_BOOT_OFF = bytes([6, 0, 0, 0, 0])  # efivar attributes, then SecureBoot = 0


@pytest.fixture
def served(dnf_served):
    return dnf_served


# -- the host ------------------------------------------------------------------------------------------------------
def host_facts(tree: Path, os_release: str, arch: str, kernel: str, nvswitches: int = 0) -> dict:
    """gpu_detect's facts of a host tree: os-release from the corpus, one H100, ``nvswitches`` NVSwitches,
    the running kernel's release, Secure Boot off, no driver."""
    files = {
        "etc/os-release": (CORPUS / os_release).read_text(),
        "proc/sys/kernel/arch": arch + "\n",
        "proc/sys/kernel/osrelease": kernel + "\n",
        "sys/bus/pci/devices/0000:18:00.0/vendor": "0x10de\n",
        "sys/bus/pci/devices/0000:18:00.0/device": H100 + "\n",
        "sys/bus/pci/devices/0000:18:00.0/class": "0x030200\n",
    }
    for n in range(nvswitches):
        dev = f"sys/bus/pci/devices/0000:0{n + 5}:00.0"
        files |= {f"{dev}/vendor": "0x10de\n", f"{dev}/device": NVSWITCH + "\n", f"{dev}/class": "0x068000\n"}
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    efivar = tree / gpu_detect.SECURE_BOOT_VAR.lstrip("/")
    efivar.parent.mkdir(parents=True, exist_ok=True)
    efivar.write_bytes(SECURE_BOOT_OFF)
    facts = gpu_detect.detect(str(tree))
    assert facts["os"]["family"] == "redhat" and facts["os"]["arch"] == arch, facts["os"]
    assert facts["gpus"][0]["device_id"] == H100 and len(facts["nvswitches"]) == nvswitches
    assert facts["kernel"]["release"] == kernel and facts["secure_boot"] is False
    assert not facts["driver"]["loaded"]
    return facts


def plan_module(facts: dict, branch: str) -> dict:
    """The plan, from the collection's nvidia_driver_plan module run by ``ansible`` (ad hoc, on localhost)."""
    args = json.dumps({"facts": facts, "source": "auto", "branch": branch})
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections_path()),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "gpu_install.nvidia.nvidia_driver_plan",
         "-a", args, "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["refusal"] is None, result["refusal"]
    return result


# -- carrying the plan out in a fixture root, as the role does ----------------------------------------------------
def write_repo(root: DnfRoot, served: DnfRepos, repo_id: str, facts: dict, base: str) -> None:
    """gpu-install's .repo file and pinned key for ``repo_id``, as the repositories role writes them, with
    gpu_install_repositories.<id> pointing at the fixture's stand-in."""
    mirror = {repo_id: {"url": base, "key_url": served.key_url, "fingerprint": served.fingerprint}}
    repo = repos_mod.resolve(repo_id, facts, mirror)
    keyfile = root.path / "etc/pki/rpm-gpg" / f"gpu-install-{repo_id}.asc"
    keyfile.parent.mkdir(parents=True, exist_ok=True)
    keyfile.write_bytes(repos_mod.keyring_bytes(repo, served.key_bytes))
    (root.path / "etc/yum.repos.d" / f"gpu-install-{repo_id}.repo").write_text(
        repos_mod.render_dnf(repo, keyfile=str(keyfile))
    )


def configure_repositories(root: DnfRoot, served: DnfRepos, plan: dict, facts: dict) -> None:
    write_repo(root, served, "cuda", facts, f"{served.url}/cuda")
    for repo_id in plan["repositories"]:
        assert repo_id == "epel", plan["repositories"]
        write_repo(root, served, repo_id, facts, f"{served.url}/epel")


def carry_out(root: DnfRoot, plan: dict, codeready: bool = True) -> subprocess.CompletedProcess[str]:
    """The plan's dnf steps in install.yml's order; returns the driver install's dnf run (check=False)."""
    if plan["remove"]:
        root.dnf("remove", "-y", *plan["remove"])
    if plan["hold"]:
        hold = root.path / plan["hold"]["path"].lstrip("/")
        hold.parent.mkdir(parents=True, exist_ok=True)
        hold.write_text(plan["hold"]["content"])
    lock = plan["versionlock"]
    if lock:
        root.dnf("install", "-y", lock["plugin"])
        if lock["stale"]:
            root.dnf("-y", "versionlock", "delete", *lock["stale"])
        if not lock["held"]:
            root.dnf("-y", "versionlock", "add", lock["glob"])
    if plan["codeready_packages"]:
        root.dnf("install", "-y", *plan["codeready_packages"])
    if codeready and plan["codeready"]:
        listed = root.dnf("repolist", "--all", "-q").stdout.splitlines()
        defined = [line.split()[0] for line in listed if line.strip()]
        for group in plan["codeready"]:
            chosen = next(i for i in group["ids"] if i in defined)
            argv = group["enable"][chosen]
            assert argv[0] == "dnf", argv  # subscription-manager has no stand-in here
            root.dnf(*argv[1:])
    heads = plan["headers"] + (["dkms"] if plan["dkms"] else [])
    if heads:
        proc = root.dnf("install", "-y", *heads, check=False)
        if proc.returncode != 0:
            return proc
    return root.dnf("install", "-y", *plan["packages"], *plan["fabricmanager"], check=False)


def branch_of(evra: str) -> str:
    """'3:580.105.08-1.el9.x86_64' -> '580'."""
    return evra.split(":", 1)[1].split(".", 1)[0]


def from_repo(root: DnfRoot, name: str) -> str:
    """The repository dnf installed ``name`` from."""
    out = root.dnf("repoquery", "--installed", "-q", "--qf", "%{from_repo}", name).stdout.split()
    assert len(out) == 1, out
    return out[0]


def driver_packages(installed: dict[str, str]) -> dict[str, str]:
    """Installed packages of NVIDIA's driver (name -> branch)."""
    return {n: branch_of(v) for n, v in installed.items() if "nvidia" in n and not n.startswith("python3-dnf")}


def assert_driver(root: DnfRoot, plan: dict, branch: str, dkms_repo: str) -> dict[str, str]:
    got = root.installed()
    assert branch_of(got["nvidia-open"]) == branch
    assert set(driver_packages(got).values()) == {branch}, driver_packages(got)  # nothing of another branch
    assert "cuda-drivers" not in got and "kmod-nvidia-latest-dkms" not in got  # open modules, as planned
    assert branch_of(got["kmod-nvidia-open-dkms"]) == branch
    assert from_repo(root, "dkms") == dkms_repo
    release = plan["headers"][0].removeprefix("kernel-devel-")
    assert got["kernel-devel"].split(":", 1)[1] == release  # the running kernel's headers, for DKMS
    return got


def assert_fabric_manager(got: dict[str, str], plan: dict, branch: str) -> None:
    names = [DRIVER_BRANCHES[branch]["fabric_manager"], DRIVER_BRANCHES[branch]["nscq"]]
    assert plan["fabricmanager"] == names
    assert {n: branch_of(got[n]) for n in names} == dict.fromkeys(names, branch)


# -- cases -----------------------------------------------------------------------------------------------------------
EL = {
    # id: (corpus os-release, fixture distro, arch, running kernel = the fixture's kernel-devel)
    "rocky9": ("rocky-9.4", "el9", "x86_64", "5.14.0-1.el9.x86_64"),
    "rocky9-aarch64": ("rocky-9.4", "el9", "aarch64", "5.14.0-1.el9.aarch64"),
    "rocky8": ("rocky-8.9", "el8", "x86_64", "4.18.0-1.el8.x86_64"),
    "rhel10": ("rhel-10.0", "el10", "x86_64", "6.12.0-1.el10.x86_64"),
    "amzn2023": ("amzn-2023", "amzn2023", "x86_64", "6.1.0-1.amzn2023.x86_64"),
}
# A RHEL 10 host on its cloud's RHUI names CodeReady Builder so (research notes: percona docs PR #859).
RHEL10_RHUI = {"crb": "codeready-builder-for-rhel-10-rhui-rpms"}


def make_case(tmp_path: Path, served: DnfRepos, host: str, nvswitches: int = 0, repo_ids=None):
    os_release, distro, arch, kernel = EL[host]
    facts = host_facts(tmp_path / "host", os_release, arch, kernel, nvswitches)
    root = served.root(tmp_path / "root", distro, arch, repo_ids=repo_ids)
    return facts, root


@pytest.mark.parametrize(
    ("host", "branch", "nvswitches", "crb"),
    [
        ("rocky9", "", 0, "crb"),
        ("rocky9", "575", 4, "crb"),
        ("rocky9", "580", 4, "crb"),
        ("rocky8", "580", 0, "powertools"),
        ("rocky9-aarch64", "580", 2, "crb"),
    ],
)
def test_module_stream_plan_installs_the_branch_with_dkms_from_epel_once_codeready_is_enabled(
    served, tmp_path, host, branch, nvswitches, crb
):
    facts, root = make_case(tmp_path, served, host, nvswitches)
    plan = plan_module(facts, branch)
    want = branch or newest_branch(root.cuda_dir)
    stream = f"{want}-open" if branch else "open-dkms"
    assert plan["module"] == f"nvidia-driver:{stream}" and plan["versionlock"] is None
    assert [g["ids"] for g in plan["codeready"]] == [[crb]]
    configure_repositories(root, served, plan, facts)

    proc = carry_out(root, plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    assert f"stream={stream}" in (root.path / "etc/dnf/modules.d/nvidia-driver.module").read_text()
    got = assert_driver(root, plan, want, "gpu-install-epel")
    assert "gpu-install-crb-stand-in-dep" in got  # what EPEL needed from CodeReady Builder
    if nvswitches:
        assert_fabric_manager(got, plan, want)
    else:
        assert plan["fabricmanager"] == []
    arches = {evra.rsplit(".", 1)[1] for evra in got.values()}
    assert arches <= {root.arch, "noarch"}, arches


def test_without_the_codeready_step_dkms_from_epel_does_not_resolve(served, tmp_path):
    facts, root = make_case(tmp_path, served, "rocky9")
    plan = plan_module(facts, "580")
    configure_repositories(root, served, plan, facts)
    proc = carry_out(root, plan, codeready=False)
    assert proc.returncode != 0
    assert "gpu-install-crb-stand-in-dep" in proc.stdout + proc.stderr
    assert "dkms" not in root.installed() and "nvidia-open" not in root.installed()


def test_amazon_linux_module_stream_plan_takes_dkms_from_nvidias_repository(served, tmp_path):
    facts, root = make_case(tmp_path, served, "amzn2023", nvswitches=4)
    plan = plan_module(facts, "580")
    assert plan["repositories"] == [] and plan["codeready"] == []  # no EPEL serves Amazon Linux
    assert "dkms" in plan["repository_packages"]["cuda"]
    assert plan["module"] == "nvidia-driver:580-open"
    configure_repositories(root, served, plan, facts)
    assert not (root.path / "etc/yum.repos.d/gpu-install-epel.repo").exists()

    proc = carry_out(root, plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = assert_driver(root, plan, "580", "gpu-install-cuda")
    assert_fabric_manager(got, plan, "580")


def rhel10_with(served: DnfRepos, tmp_path: Path, branch: str) -> tuple[dict, DnfRoot, dict]:
    facts, root = make_case(tmp_path, served, "rhel10", nvswitches=4, repo_ids=RHEL10_RHUI)
    plan = plan_module(facts, branch)
    configure_repositories(root, served, plan, facts)
    proc = carry_out(root, plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return facts, root, plan


def test_rhel10_versionlock_plan_holds_its_branch_below_the_newest_and_a_second_run_adds_nothing(served, tmp_path):
    assert newest_branch(CUDA_DIR_OF["el10"]) != "580"  # a newer branch is there to be refused
    facts, root, plan = rhel10_with(served, tmp_path, "580")
    assert plan["hold"] is None and plan["module"] is None
    assert plan["versionlock"]["held"] is False and plan["versionlock"]["stale"] == []
    assert plan["codeready"][0]["ids"][-1] == RHEL10_RHUI["crb"]
    assert "/epel/10.0/" in (root.path / "etc/yum.repos.d/gpu-install-epel.repo").read_text()  # RHEL 10.0's EPEL
    got = assert_driver(root, plan, "580", "gpu-install-epel")
    assert_fabric_manager(got, plan, "580")
    locks = root.versionlock_list.read_text()
    assert set(driver.versionlock_entries(locks).values()) == {"580"}

    # The next run probes the root's lock list, as the plan module reads /etc/dnf/plugins/versionlock.list.
    settings = {"source": "auto", "branch": "580", "kernel_modules": "auto", "image_build": False}
    again = driver.plan(facts, settings, probes={"versionlock": locks})
    assert again["versionlock"]["held"] is True and again["versionlock"]["stale"] == []
    again |= driver.switch(again, {n: v for n, v in got.items()}, False, False)
    assert again.pop("refusal") is None and again["switch"] is False and again["remove"] == []
    proc = carry_out(root, again)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert root.versionlock_list.read_text() == locks  # nothing added
    assert root.installed() == got


def test_rhel10_switch_to_a_newer_branch_releases_the_old_locks_and_installs_it(served, tmp_path):
    facts, root, _first = rhel10_with(served, tmp_path, "580")
    before = root.installed()
    settings = {"source": "auto", "branch": "590", "kernel_modules": "auto", "image_build": False}
    plan = driver.plan(facts, settings, probes={"versionlock": root.versionlock_list.read_text()})
    plan |= driver.switch(plan, dict(before), False, False)
    assert plan.pop("refusal") is None and plan["switch"] is True
    assert plan["versionlock"]["held"] is False
    assert set(driver.versionlock_entries("\n".join(plan["versionlock"]["stale"])).values()) == {"580"}
    assert "nvidia-open" in plan["remove"]

    proc = carry_out(root, plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = assert_driver(root, plan, "590", "gpu-install-epel")
    assert_fabric_manager(got, plan, "590")
    assert set(driver.versionlock_entries(root.versionlock_list.read_text()).values()) == {"590"}


# -- repos.preflight against NVIDIA's modular repository -------------------------------------------------------------
def test_preflight_finds_the_planned_packages_in_a_modular_cuda_repository_with_no_stream_enabled(served, tmp_path):
    facts, _root = make_case(tmp_path, served, "rocky9", nvswitches=4)
    plan = plan_module(facts, "580")
    mirror = {"url": f"{served.url}/cuda", "key_url": served.key_url, "fingerprint": served.fingerprint}
    wanted = plan["repository_packages"]["cuda"]
    assert "nvidia-open" in wanted and "dkms" not in wanted  # dkms is EPEL's to offer
    repo = repos_mod.resolve("cuda", facts, {"cuda": mirror}, wanted)
    _keys, report = repos_mod.preflight([repo])
    assert report["cuda"]["packages"] == wanted and report["cuda"]["checked_uris"] >= len(wanted)

"""Package databases and the Docker, toolkit, driver and persistenced facts read from them.

dpkg status snippets live in corpus/dpkg/. The rpm databases are FIXTURES BUILT AT TEST TIME with
the real ``rpm`` and ``rpmbuild`` (empty stand-in packages with the real names, epochs, versions and
releases that distributions ship); the tests skip where those tools are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import make_tree, module_utils

gpu_detect = module_utils("gpu_detect")

CORPUS = Path(__file__).resolve().parent / "corpus"
DPKG = CORPUS / "dpkg"
UBUNTU = (CORPUS / "os-release" / "ubuntu-22.04").read_text()
RHEL9 = (CORPUS / "os-release" / "rhel-9.4").read_text()


def dpkg_tree(tmp_path: Path, snippet: str, extra: dict | None = None) -> Path:
    files = {"etc/os-release": UBUNTU, "var/lib/dpkg/status": (DPKG / snippet).read_text()}
    files.update(extra or {})
    return make_tree(tmp_path / snippet, files)


def codes(facts: dict) -> list:
    return [p["code"] for p in facts["problems"]]


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("full", "upstream"),
    [
        ("5:24.0.7-1~ubuntu.22.04~jammy", "24.0.7"),
        ("20.10.24+dfsg1-1+deb12u1", "20.10.24"),
        ("26.1.5+dfsg1-9+b1", "26.1.5"),
        ("2:1.13.1-209.git7d71120.el7_9", "1.13.1"),
        ("17.05.0~ce-0~ubuntu-xenial", "17.05.0"),
        ("25.0.6-1.amzn2023.0.2", "25.0.6"),
        ("18.09.1~3-0~debian-stretch", "18.09.1"),
        ("5:18.09.1~3-0~debian-stretch", "18.09.1"),
        ("1.11.2-0~xenial", "1.11.2"),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_upstream_version_strips_epoch_and_distro_suffixes(full, upstream):
    assert gpu_detect._upstream(full) == upstream


def test_versions_compare_numerically_not_as_strings():
    assert gpu_detect._version_tuple("1.9.1") < gpu_detect._version_tuple("1.12") < gpu_detect._version_tuple("1.13.1")


# --------------------------------------------------------------------------- dpkg


def test_removed_docker_with_config_files_counts_as_absent(tmp_path):
    docker = gpu_detect.detect(str(dpkg_tree(tmp_path, "removed-docker-io-with-config-files")))["docker"]
    assert docker["flavour"] is None
    assert docker["engines"] == []


def test_debians_docker_system_tray_package_is_not_docker(tmp_path):
    packages = gpu_detect.parse_dpkg_status((DPKG / "removed-docker-io-with-config-files").read_text())
    assert "docker" in packages  # installed, but...
    docker = gpu_detect.detect(str(dpkg_tree(tmp_path, "removed-docker-io-with-config-files")))["docker"]
    assert docker["flavour"] is None  # ...only rpm's "docker" is an engine


def test_half_configured_and_unpacked_packages_count_as_absent(tmp_path):
    packages = gpu_detect.parse_dpkg_status((DPKG / "half-configured-docker-ce").read_text())
    assert set(packages) == {"containerd.io"}
    assert gpu_detect.detect(str(dpkg_tree(tmp_path, "half-configured-docker-ce")))["docker"]["flavour"] is None


def test_held_package_is_installed(tmp_path):
    docker = gpu_detect.detect(str(dpkg_tree(tmp_path, "held-docker-ce")))["docker"]
    assert (docker["flavour"], docker["version"]) == ("docker-ce", "24.0.7")


def test_truncated_status_keeps_the_complete_stanzas():
    packages = gpu_detect.parse_dpkg_status((DPKG / "truncated").read_text())
    assert set(packages) == {"docker-ce", "nvidia-container-toolkit"}


@pytest.mark.parametrize(
    ("snippet", "flavour", "version", "config"),
    [
        ("docker-io-trixie", "docker.io", "26.1.5", "/etc/docker/daemon.json"),
        ("docker-ce-stretch", "docker-ce", "18.09.1", "/etc/docker/daemon.json"),
        ("docker-engine-17.05", "docker-engine", "17.05.0", "/etc/docker/daemon.json"),
        ("moby-engine-azure", "moby-engine", "25.0.3", "/etc/docker/daemon.json"),
    ],
)
def test_docker_flavour_and_upstream_version_from_dpkg(tmp_path, snippet, flavour, version, config):
    facts = gpu_detect.detect(str(dpkg_tree(tmp_path, snippet)))
    assert facts["docker"]["flavour"] == flavour
    assert facts["docker"]["version"] == version
    assert facts["docker"]["config_path"] == config
    assert "docker_too_old" not in codes(facts)


def test_docker_older_than_1_12_is_refused(tmp_path):
    facts = gpu_detect.detect(str(dpkg_tree(tmp_path, "docker-engine-1.11")))
    assert facts["docker"]["version"] == "1.11.2"
    code, reason = gpu_detect.refusal(facts)
    assert code == 3
    assert reason.startswith("Docker 1.11.2 (docker-engine 1.11.2-0~xenial) is older than 1.12")


def test_podman_docker_shim_alone_is_refused_where_docker_is_wanted(tmp_path):
    facts = gpu_detect.detect(str(dpkg_tree(tmp_path, "podman-docker-alone")))
    assert facts["docker"]["podman_shim"] is True
    assert facts["docker"]["flavour"] is None
    # auto takes the Podman the shim stands for: Docker is not installed, so the shim refuses nothing.
    assert facts["engines"] == ["podman"]
    assert gpu_detect.refusal(facts) is None
    facts = gpu_detect.detect(str(dpkg_tree(tmp_path / "again", "podman-docker-alone")))
    module_utils("engines").apply(facts, ["docker"])
    code, reason = gpu_detect.refusal(facts)
    assert code == 3
    assert reason.startswith("Found podman's docker shim (podman-docker 4.9.3+ds1-1ubuntu0.2), not Docker")


def test_podman_docker_shim_beside_a_real_engine_is_only_a_warning(tmp_path):
    facts = gpu_detect.detect(str(dpkg_tree(tmp_path, "podman-docker-beside-docker-io")))
    assert facts["docker"]["podman_shim"] is True
    assert facts["docker"]["flavour"] == "docker.io"
    assert "podman_docker_shim_beside_docker" in codes(facts)
    assert gpu_detect.refusal(facts) is None


def test_rootless_docker_needs_the_extras_and_a_user_unit(tmp_path):
    facts = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))
    assert facts["docker"]["rootless"] is True
    problem = next(p for p in facts["problems"] if p["code"] == "rootless_docker")
    assert problem["refuses"] is False
    assert "alice" in problem["message"]


def test_rootless_extras_without_a_user_unit_is_not_rootless(tmp_path):
    root = shutil.copytree(CORPUS / "dgx-h100-ubuntu2204", tmp_path / "t", symlinks=True)
    shutil.rmtree(root / "home")
    facts = gpu_detect.detect(str(root))
    assert facts["docker"]["rootless"] is False
    assert "rootless_docker" not in codes(facts)


def test_root_users_rootless_unit_counts(tmp_path):
    root = dpkg_tree(
        tmp_path,
        "held-docker-ce",
        {
            "root/.config/systemd/user/docker.service": "[Service]\n",
            "var/lib/dpkg/status": (DPKG / "held-docker-ce").read_text()
            + "\nPackage: docker-ce-rootless-extras\nStatus: install ok installed\nVersion: 5:24.0.7-1\n",
        },
    )
    assert gpu_detect.detect(str(root))["docker"]["rootless"] is True


def test_toolkit_version_from_dpkg():
    toolkit = gpu_detect.detect(str(CORPUS / "dgx-h100-ubuntu2204"))["container_toolkit"]
    assert toolkit["installed"] is True
    assert toolkit["version"] == "1.14.3"


def test_persistenced_package_version_from_dpkg():
    persistenced = gpu_detect.detect(str(CORPUS / "workstation-debian12-nouveau"))["persistenced"]
    assert persistenced["installed"] is True
    assert persistenced["version"] == "535.171.04"


# --------------------------------------------------------------------------- snap


def test_snap_docker_reads_its_version_and_config_path(tmp_path):
    root = make_tree(
        tmp_path,
        {
            "etc/os-release": UBUNTU,
            "snap/docker/2915/meta/snap.yaml": "name: docker\nversion: '24.0.5'\nsummary: Docker container runtime\n",
            "snap/docker/current": ("->", "2915"),
        },
    )
    docker = gpu_detect.detect(str(root))["docker"]
    assert docker["flavour"] == "snap"
    assert docker["version"] == "24.0.5"
    assert docker["config_path"] == "/var/snap/docker/current/config/daemon.json"


def test_snap_docker_from_the_blob_and_its_data_dir(tmp_path):
    root = make_tree(
        tmp_path,
        {
            "var/lib/snapd/snaps/docker_2915.snap": b"hsqs",
            "var/snap/docker/common/.keep": "",
        },
    )
    docker = gpu_detect.detect(str(root))["docker"]
    assert (docker["flavour"], docker["version"]) == ("snap", None)


def test_a_deb_engine_is_preferred_over_the_snap(tmp_path):
    root = dpkg_tree(
        tmp_path, "docker-io-trixie", {"snap/docker/current/meta/snap.yaml": "name: docker\nversion: 27.2.0\n"}
    )
    docker = gpu_detect.detect(str(root))["docker"]
    assert docker["flavour"] == "docker.io"
    assert docker["engines"] == ["docker.io", "snap"]


# --------------------------------------------------------------------------- rpm (real rpm fixtures)

SPEC = """Name: %{pkg}
Version: %{ver}
Release: %{rel}
%{?ep:Epoch: %{ep}}
Summary: gpu-install test fixture stand-in
License: MIT
%description
A stand-in package built by gpu-install's unit tests.
%files
"""

# name, epoch, version, release, arch
RPMS = {
    "rhel7-docker": [("docker", "2", "1.13.1", "209.git7d71120.el7_9", "x86_64")],
    "rhel9-docker-ce": [
        ("docker-ce", "3", "26.1.3", "1.el9", "x86_64"),
        ("nvidia-container-toolkit", None, "1.17.8", "1", "x86_64"),
        ("nvidia-container-toolkit-base", None, "1.17.8", "1", "x86_64"),
        ("kmod-nvidia-open-dkms", "3", "570.86.15", "1.el9", "x86_64"),
        ("nvidia-persistenced", "3", "570.86.15", "1.el9", "x86_64"),
        ("glibc", None, "2.34", "100.el9_4.2", "x86_64"),
    ],
    "amzn2023-docker": [
        ("docker", None, "25.0.6", "1.amzn2023.0.2", "aarch64"),
        ("glibc", None, "2.34", "52.amzn2023.0.11", "aarch64"),
    ],
    "rhel9-podman-docker": [("podman-docker", "5", "4.9.4", "12.el9_4", "noarch")],
}


def _have_rpm_tools() -> bool:
    return shutil.which("rpm") is not None and shutil.which("rpmbuild") is not None


@pytest.fixture(scope="module")
def rpm_fixtures(tmp_path_factory):
    """FIXTURE: rpm sqlite databases built at test time with the real rpm/rpmbuild."""
    if not _have_rpm_tools():
        pytest.fail("rpm and rpmbuild are needed to build the rpm database fixtures: scripts/test installs rpm")
    base = tmp_path_factory.mktemp("rpm-fixtures")
    spec = base / "stand-in.spec"
    spec.write_text(SPEC)
    top = base / "rpmbuild"
    built = {}
    for name, epoch, version, release, arch in {row for rows in RPMS.values() for row in rows}:
        defines = ["--define", f"_topdir {top}", "--define", f"pkg {name}", "--define", f"ver {version}"]
        defines += ["--define", f"rel {release}", "--define", "_build_id_links none"]
        if epoch:
            defines += ["--define", f"ep {epoch}"]
        subprocess.run(
            ["rpmbuild", "-bb", "--quiet", "--target", arch, *defines, str(spec)],
            check=True,
            capture_output=True,
        )
        built[(name, arch)] = next((top / "RPMS" / arch).glob(f"{name}-{version}-{release}.{arch}.rpm"))
    dbs = {}
    for db_name, rows in RPMS.items():
        dbpath = base / db_name / "var/lib/rpm"
        dbpath.mkdir(parents=True)
        rpm = ["rpm", "--dbpath", str(dbpath), "--define", "_db_backend sqlite"]
        subprocess.run([*rpm, "--initdb"], check=True, capture_output=True)
        files = [str(built[(row[0], row[4])]) for row in rows]
        subprocess.run(
            [*rpm, "-i", "--justdb", "--nodeps", "--noscripts", "--ignorearch", "--ignoreos", *files],
            check=True,
            capture_output=True,
        )
        dbs[db_name] = dbpath
    return dbs


def rpm_tree(tmp_path: Path, dbpath: Path, os_release: str = RHEL9, at: str = "var/lib/rpm") -> Path:
    root = make_tree(tmp_path / "root", {"etc/os-release": os_release})
    shutil.copytree(dbpath, root / at)
    return root


def test_rpm_fixture_db_is_sqlite_as_rpm_wrote_it(rpm_fixtures):
    assert (rpm_fixtures["rhel9-docker-ce"] / "rpmdb.sqlite").is_file()


def test_rhel9_docker_ce_toolkit_driver_and_persistenced_from_rpmdb(tmp_path, rpm_fixtures):
    facts = gpu_detect.detect(str(rpm_tree(tmp_path, rpm_fixtures["rhel9-docker-ce"])))
    assert facts["docker"]["flavour"] == "docker-ce"
    assert facts["docker"]["version"] == "26.1.3"
    assert facts["docker"]["package"] == {"name": "docker-ce", "version": "3:26.1.3-1.el9"}
    assert facts["container_toolkit"]["version"] == "1.17.8"
    assert facts["driver"]["package"] == {"name": "kmod-nvidia-open-dkms", "version": "3:570.86.15-1.el9"}
    assert facts["persistenced"]["version"] == "570.86.15"
    assert facts["os"]["arch"] is None or facts["os"]["arch"] == "x86_64"
    assert "package_db_unreadable" not in codes(facts)


def test_rhel7_docker_rpm_counts_as_red_hats_docker(tmp_path, rpm_fixtures):
    facts = gpu_detect.detect(str(rpm_tree(tmp_path, rpm_fixtures["rhel7-docker"])))
    assert facts["docker"]["flavour"] == "docker"
    assert facts["docker"]["version"] == "1.13.1"
    assert facts["docker"]["package"]["version"] == "2:1.13.1-209.git7d71120.el7_9"


def test_amazon_linux_2023_docker_and_arch_from_glibc(tmp_path, rpm_fixtures):
    amzn = (CORPUS / "os-release" / "amzn-2023").read_text()
    root = rpm_tree(tmp_path, rpm_fixtures["amzn2023-docker"], amzn, at="usr/lib/sysimage/rpm")
    facts = gpu_detect.detect(str(root))
    assert (facts["docker"]["flavour"], facts["docker"]["version"]) == ("docker", "25.0.6")
    assert facts["os"]["arch"] == "aarch64"
    assert facts["os"]["codename"] == "amzn2023"


def test_podman_docker_rpm_alone_is_refused(tmp_path, rpm_fixtures):
    facts = gpu_detect.detect(str(rpm_tree(tmp_path, rpm_fixtures["rhel9-podman-docker"])))
    assert facts["docker"]["podman_shim"] is True
    assert gpu_detect.refusal(facts)[0] == 3


def test_rpm_headers_with_the_8_byte_magic_prefix_are_read(tmp_path, rpm_fixtures):
    root = rpm_tree(tmp_path, rpm_fixtures["rhel9-docker-ce"])
    db = root / "var/lib/rpm/rpmdb.sqlite"
    conn = sqlite3.connect(db)
    magic = bytes.fromhex("8eade80100000000")
    rows = conn.execute("SELECT hnum, blob FROM Packages").fetchall()
    conn.executemany("UPDATE Packages SET blob = ? WHERE hnum = ?", [(magic + blob, h) for h, blob in rows])
    conn.commit()
    conn.close()
    assert gpu_detect.detect(str(root))["docker"]["version"] == "26.1.3"


def test_rpm_query_format_agrees_with_the_sqlite_reader(rpm_fixtures):
    dbpath = rpm_fixtures["rhel9-docker-ce"]
    out = subprocess.run(
        ["rpm", "--dbpath", str(dbpath), "-qa", "--qf", gpu_detect.RPM_QUERY],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert gpu_detect.parse_rpm_query(out) == gpu_detect.read_rpm_sqlite(str(dbpath / "rpmdb.sqlite"))


def test_corrupt_rpmdb_is_a_warning_and_reads_as_absent(tmp_path):
    root = make_tree(tmp_path, {"etc/os-release": RHEL9, "var/lib/rpm/rpmdb.sqlite": b"not a database" * 100})
    facts = gpu_detect.detect(str(root))
    problem = next(p for p in facts["problems"] if p["code"] == "package_db_unreadable")
    assert problem["refuses"] is False
    assert facts["docker"]["flavour"] is None
    assert facts["supported"] is True


def test_sqlite_db_with_garbage_blobs_skips_those_rows(tmp_path, rpm_fixtures):
    root = rpm_tree(tmp_path, rpm_fixtures["rhel9-docker-ce"])
    conn = sqlite3.connect(root / "var/lib/rpm/rpmdb.sqlite")
    conn.execute("INSERT INTO Packages (blob) VALUES (?)", (b"\xff" * 40,))
    conn.execute("INSERT INTO Packages (blob) VALUES (?)", (b"\x00\x00\x00\x01",))
    conn.commit()
    conn.close()
    facts = gpu_detect.detect(str(root))
    assert facts["docker"]["flavour"] == "docker-ce"
    assert "package_db_unreadable" not in codes(facts)


def test_garbage_berkeley_db_under_root_is_reported_unreadable(tmp_path):
    root = make_tree(tmp_path, {"etc/os-release": RHEL9, "var/lib/rpm/Packages": b"\x00\x06\x15\x61" + b"\0" * 60})
    facts = gpu_detect.detect(str(root))
    assert "package_db_unreadable" in codes(facts)


def test_dpkg_and_rpm_both_count(tmp_path, rpm_fixtures):
    root = rpm_tree(tmp_path, rpm_fixtures["rhel9-docker-ce"])
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text((DPKG / "podman-docker-alone").read_text())
    facts = gpu_detect.detect(str(root))
    assert facts["docker"]["flavour"] == "docker-ce"
    assert facts["docker"]["podman_shim"] is True


# --------------------------------------------------------------------------- static binaries


def test_a_dockerd_no_package_owns_is_the_static_flavour(tmp_path):
    root = make_tree(tmp_path, {"etc/os-release": UBUNTU, "usr/local/bin/dockerd": b"\x7fELF"})
    docker = gpu_detect.detect(str(root))["docker"]
    assert (docker["flavour"], docker["config_path"]) == ("static", "/etc/docker/daemon.json")
    assert docker["package"] == {"name": "dockerd", "version": None}  # a tree is read, never run


def test_a_packaged_engine_hides_its_own_dockerd_from_the_static_probe(tmp_path):
    root = dpkg_tree(tmp_path, "docker-io-trixie", {"usr/sbin/dockerd": b"\x7fELF"})
    docker = gpu_detect.detect(str(root))["docker"]
    assert docker["flavour"] == "docker.io" and docker["engines"] == ["docker.io"]


def test_static_dockerd_version_comes_from_the_binary_itself():
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.path.exists(dockerd):
        pytest.fail("this test needs a dockerd binary (scripts/test installs docker.io)")
    version = gpu_detect._dockerd_version(dockerd)
    assert version is not None and re.fullmatch(r"\d+\.\d+\.\d+", version), version


def test_static_dockerd_version_of_something_else_is_none(tmp_path):
    assert gpu_detect._dockerd_version("/bin/true") is None
    assert gpu_detect._dockerd_version(str(tmp_path / "absent")) is None

"""The toolkit fixture (tests/fixtures/toolkit.py) is NVIDIA's toolkit packaged as NVIDIA packages it.

FIXTURE under test: NVIDIA's container toolkit 1.20.0 built from NVIDIA's source (shared/vendor) and packaged
after the tarball's packaging/debian/ (control, *.install, postinst/postrm, rules' `dh $@ --with systemd`).
Each expectation below names the file of NVIDIA's it comes from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures import toolkit  # noqa: E402


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("toolkit-debs")
    return {p.name: p for p in toolkit.debs(out)}


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def contents(deb: Path) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    return {line.split()[5].removeprefix(".") for line in listing.splitlines() if not line.startswith("d")}


def control_file(deb: Path, name: str, tmp_path: Path) -> str:
    where = tmp_path / deb.name
    subprocess.run(["dpkg-deb", "-e", str(deb), str(where)], check=True)
    path = where / name
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("version", toolkit.TOOLKIT_VERSIONS)
def test_each_version_has_nvidias_four_packages_with_nvidias_dependencies(debs, version):
    names = {name.split("_")[0] for name in debs if f"_{version}_" in name}
    # packaging/debian/control, less the operator-extensions package; libnvidia-container's two stand-ins.
    assert names == {
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    }
    main = debs[f"nvidia-container-toolkit_{version}_amd64.deb"]
    assert field(main, "Depends") == (
        f"nvidia-container-toolkit-base (= {version}), libnvidia-container-tools (= {version}), "
        "libnvidia-container-tools (<< 2.0.0)"
    )
    base = debs[f"nvidia-container-toolkit-base_{version}_amd64.deb"]
    assert field(base, "Breaks") == (
        "nvidia-container-runtime (<= 3.5.0-1), nvidia-container-runtime-hook, nvidia-container-toolkit (<= 1.10.0-1)"
    )
    assert field(debs[f"libnvidia-container-tools_{version}_amd64.deb"], "Depends") == (
        f"libnvidia-container1 (= {version})"
    )
    for deb in (debs[n] for n in debs if f"_{version}_" in n):
        assert "gpu-install test fixture" in field(deb, "Description"), deb.name


def test_files_and_maintainer_scripts_follow_nvidias_packaging(debs, tmp_path):
    version = toolkit.TOOLKIT_VERSIONS[-1]
    base = debs[f"nvidia-container-toolkit-base_{version}_amd64.deb"]
    # packaging/debian/nvidia-container-toolkit-base.install
    assert {
        "/usr/bin/nvidia-container-runtime",
        "/usr/bin/nvidia-ctk",
        "/usr/bin/nvidia-cdi-hook",
        "/lib/systemd/system/nvidia-cdi-refresh.service",
        "/lib/systemd/system/nvidia-cdi-refresh.path",
        "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env",
    } <= contents(base)
    assert control_file(base, "conffiles", tmp_path).split() == ["/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env"]
    postinst = control_file(base, "postinst", tmp_path)
    # packaging/debian/nvidia-container-toolkit-base.postinst, then what dh_systemd_enable/_start add.
    assert (
        "/usr/bin/nvidia-ctk --quiet config --config-file=/etc/nvidia-container-runtime/config.toml --in-place"
        in postinst
    )
    assert "deb-systemd-helper enable 'nvidia-cdi-refresh.path'" in postinst
    assert "[ -d /run/systemd/system ]" in postinst and "deb-systemd-invoke start" in postinst
    assert "#DEBHELPER#" not in postinst
    assert "deb-systemd-helper purge" in control_file(base, "postrm", tmp_path)

    main = debs[f"nvidia-container-toolkit_{version}_amd64.deb"]
    # packaging/debian/nvidia-container-toolkit.install and .postinst/.postrm
    assert "/usr/bin/nvidia-container-runtime-hook" in contents(main)
    assert "ln -s ${NVIDIA_CONTAINER_RUNTIME_HOOK} ${NVIDIA_CONTAINER_TOOLKIT}" in control_file(
        main, "postinst", tmp_path
    )
    assert "rm ${NVIDIA_CONTAINER_TOOLKIT}" in control_file(main, "postrm", tmp_path)


def test_the_binaries_are_nvidias_1_20_0():
    out = subprocess.run(
        [str(toolkit.build() / "nvidia-ctk"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "NVIDIA Container Toolkit CLI version 1.20.0" in out, out


def test_the_libnvidia_container_stand_in_says_so_and_fails(debs, tmp_path):
    deb = debs[f"libnvidia-container-tools_{toolkit.TOOLKIT_VERSIONS[-1]}_amd64.deb"]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "x")], check=True)
    cli = str(tmp_path / "x/usr/bin/nvidia-container-cli")
    info = subprocess.run([cli, "info"], capture_output=True, text=True, check=False)
    assert info.returncode != 0
    assert "stand-in for libnvidia-container" in info.stderr
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and "cli-version: 1.20.0" in version.stdout

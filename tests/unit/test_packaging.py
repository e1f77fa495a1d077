"""The wheel carries the collection; ansible-galaxy builds the same collection for fleets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFIX = "gpu_install/_collection/ansible_collections/gpu_install/nvidia/"


@pytest.fixture(scope="module")
def galaxy_collections(tmp_path_factory):
    out = tmp_path_factory.mktemp("galaxy")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", out, REPO],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    (tarball,) = out.glob("gpu_install-nvidia-*.tar.gz")
    dest = out / "collections"
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", dest, tarball],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    return tarball, dest


def _ansible_env(collections: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    env["ANSIBLE_HOME"] = str(collections.parent / "ansible-home")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_galaxy_build_keeps_python_only_parts_out(galaxy_collections):
    import tarfile

    tarball, _dest = galaxy_collections
    names = tarfile.open(tarball).getnames()
    assert "roles/gpu_install/meta/argument_specs.yml" in names
    assert "plugins/modules/gpu_facts.py" in names
    assert "plugins/module_utils/gpu_detect.py" in names
    for python_only in ("installer", "tests", "pyproject.toml", "scripts", "bench"):
        assert not any(n == python_only or n.startswith(python_only + "/") for n in names), python_only


def test_ansible_doc_documents_gpu_facts(galaxy_collections):
    _tarball, dest = galaxy_collections
    proc = subprocess.run(
        [BIN / "ansible-doc", "--json", "gpu_install.nvidia.gpu_facts"],
        capture_output=True, text=True, env=_ansible_env(dest), check=True,
    )  # fmt: skip
    doc = json.loads(proc.stdout)["gpu_install.nvidia.gpu_facts"]
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["return"]


@pytest.mark.parametrize("playbook", ["gpu_install.nvidia.site", "gpu_install.nvidia.verify"])
def test_playbooks_pass_syntax_check_by_fqcn(galaxy_collections, playbook, tmp_path):
    _tarball, dest = galaxy_collections
    proc = subprocess.run(
        [BIN / "ansible-playbook", "--syntax-check", "-i", "localhost,", playbook],
        capture_output=True, text=True, env=_ansible_env(dest), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "role",
    ["gpu_install", "nvidia_driver", "docker", "containerd", "nvidia_container", "nvidia_persistenced", "gpu_verify"],
)
def test_ansible_doc_lists_each_roles_argument_spec(galaxy_collections, role):
    _tarball, dest = galaxy_collections
    proc = subprocess.run(
        [BIN / "ansible-doc", "-t", "role", "--json", f"gpu_install.nvidia.{role}"],
        capture_output=True, text=True, env=_ansible_env(dest), check=True,
    )  # fmt: skip
    spec = json.loads(proc.stdout)[f"gpu_install.nvidia.{role}"]
    assert spec["entry_points"]["main"]["options"]


def test_wheel_carries_the_collection_and_the_cli(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path, REPO],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("gpu_install-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "galaxy.yml",
        "meta/runtime.yml",
        "playbooks/site.yml",
        "roles/docker/meta/argument_specs.yml",
        "plugins/modules/gpu_facts.py",
        "plugins/module_utils/gpu_detect.py",
    ):
        assert PREFIX + needed in names, needed
    assert "gpu_install/cli.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gpu-install = gpu_install.cli:main" in entry_points
    assert not any("__pycache__" in n for n in names)

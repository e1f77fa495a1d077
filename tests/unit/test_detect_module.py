"""The gpu_install.nvidia.gpu_facts module: run as Ansible runs it (args file, JSON out), and ansible-doc."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    ansible_doc,
    module_utils,  # noqa: F401  (puts installer/ on sys.path)
)
from conftest import run_module as _run_module

CORPUS = Path(__file__).resolve().parent / "corpus"


def run_module(tmp_path: Path, args: dict) -> tuple[int, dict]:
    return _run_module("gpu_facts", tmp_path / "args.json", args)


@pytest.mark.parametrize("check_mode", [True, False])
def test_module_returns_facts_unchanged_in_check_and_real_mode(tmp_path, check_mode):
    root = str(CORPUS / "dgx-h100-ubuntu2204")
    args = {"root": root, "_ansible_check_mode": check_mode}
    rc, first = run_module(tmp_path, args)
    _, second = run_module(tmp_path, args)
    assert rc == 0
    assert first["changed"] is False
    assert first["ansible_facts"]["gpu_install"] == first["gpu_install_facts"]
    assert first["gpu_install_facts"]["docker"]["flavour"] == "docker-ce"
    assert first["gpu_install_facts"] == second["gpu_install_facts"]  # idempotent: same facts again


def test_module_fails_with_the_error_record_on_refusal(tmp_path):
    rc, result = run_module(tmp_path, {"root": str(CORPUS / "wsl2-ubuntu2204"), "fail_on_refusal": True})
    assert rc != 0
    assert result["failed"] is True
    assert result["gpu_install_error"]["code"] == 3
    assert result["gpu_install_error"]["reason"] == result["msg"]
    assert "WSL2" in result["msg"]
    assert result["gpu_install_facts"]["wsl"] is True


def test_module_does_not_fail_on_refusal_by_default(tmp_path):
    rc, result = run_module(tmp_path, {"root": str(CORPUS / "wsl2-ubuntu2204")})
    assert rc == 0
    assert result["gpu_install_facts"]["supported"] is False


def test_ansible_doc_renders_the_module():
    doc = ansible_doc("gpu_facts")["doc"]
    assert set(doc["options"]) == {"root", "fail_on_refusal", "container_engines"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "none"

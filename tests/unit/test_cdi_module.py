"""The gpu_install.nvidia.cdi_spec module, run as Ansible runs it (args file, JSON out)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import (
    ansible_doc,
    module_utils,  # noqa: F401  (puts installer/ on sys.path)
)
from conftest import run_module as _run_module

CORPUS = Path(__file__).resolve().parent / "cdi_corpus"
sys.path.insert(0, str(CORPUS))
import tree  # noqa: E402

MODULE = "plugins/modules/cdi_spec.py"
H100_DIRS = ["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"]
KEYS = {"changed", "path", "devices", "capabilities", "gpus", "driver_version", "libraries", "missing", "stale", "diff"}


def run_module(tmp_path: Path, args: dict, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    return _run_module("cdi_spec", tmp_path / "args.json", dict(args, _ansible_check_mode=check, _ansible_diff=diff))


@pytest.fixture
def h100(tmp_path):
    return str(tree.build(CORPUS / "h100", tmp_path / "h100"))


def test_module_six_ways_check_diff_real_then_idempotent(tmp_path, h100):
    target = tmp_path / "etc" / "cdi" / "gpu-install-nvidia.json"  # the directory is made too
    args = {"root": h100, "search_paths": H100_DIRS, "path": str(target)}
    expected = (CORPUS / "h100" / "spec.json").read_text()

    rc, check = run_module(tmp_path, args, check=True)
    assert rc == 0 and check["changed"] is True and not target.parent.exists()
    rc, check_diff = run_module(tmp_path, args, check=True, diff=True)
    assert rc == 0 and check_diff["changed"] is True and not target.parent.exists()
    assert check_diff["diff"]["before"] == "" and check_diff["diff"]["after"] == expected
    assert check_diff["diff"]["before_header"] == check_diff["diff"]["after_header"] == str(target)
    rc, real = run_module(tmp_path, args)
    assert rc == 0 and real["changed"] is True
    assert target.read_text() == check_diff["diff"]["after"]  # check mode showed the exact change
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == [target.name]  # no temp file left
    assert real["devices"] == [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca",
        "nvidia.com/gpu=all",
    ]
    assert real["driver_version"] == "580.159.04" and real["gpus"][0]["device_node"] == "/dev/nvidia0"
    written = target.read_bytes()
    before = target.stat().st_mtime_ns

    for mode in ({"check": True}, {"check": True, "diff": True}, {}):
        rc, again = run_module(tmp_path, args, **mode)
        assert rc == 0 and again["changed"] is False, mode
        assert again["diff"] == {} and again["stale"] == []
        assert target.read_bytes() == written and target.stat().st_mtime_ns == before
    assert KEYS <= set(real) and KEYS <= set(again)


def test_module_rewrites_a_changed_file_and_removes_with_state_absent(tmp_path, h100):
    target = tmp_path / "spec.json"
    target.write_text('{"cdiVersion": "0.5.0"}\n')
    args = {"root": h100, "search_paths": H100_DIRS, "path": str(target)}
    rc, result = run_module(tmp_path, args, diff=True)
    assert rc == 0 and result["changed"] is True and result["diff"]["before"] == '{"cdiVersion": "0.5.0"}\n'
    assert target.read_bytes() == (CORPUS / "h100" / "spec.json").read_bytes()
    rc, check = run_module(tmp_path, dict(args, state="absent"), check=True)
    assert rc == 0 and check["changed"] is True and target.exists()
    rc, gone = run_module(tmp_path, dict(args, state="absent"))
    assert rc == 0 and gone["changed"] is True and not target.exists() and gone["devices"] == []
    rc, again = run_module(tmp_path, dict(args, state="absent"))
    assert rc == 0 and again["changed"] is False


def test_module_reports_stale_paths_of_the_spec_on_disk(tmp_path, h100):
    target = tmp_path / "spec.json"
    old = json.loads((CORPUS / "h100" / "spec.json").read_text())
    old["containerEdits"]["mounts"][0]["hostPath"] = "/usr/lib/x86_64-linux-gnu/libcuda.so.535.54.03"
    target.write_text(json.dumps(old))
    rc, result = run_module(tmp_path, {"root": h100, "search_paths": H100_DIRS, "path": str(target)})
    assert rc == 0 and result["changed"] is True
    assert result["stale"] == ["/usr/lib/x86_64-linux-gnu/libcuda.so.535.54.03"]


def test_module_without_gpu_fails_with_code_3_and_writes_nothing(tmp_path):
    target = tmp_path / "spec.json"
    rc, result = run_module(tmp_path, {"root": str(tmp_path), "path": str(target)})
    assert rc != 0 and result["failed"] is True
    assert result["gpu_install_error"]["code"] == 3
    assert result["msg"].startswith("No NVIDIA GPU was found")
    assert not target.exists() and KEYS <= set(result)


def test_module_capabilities_option_adds_graphics_and_reports_them(tmp_path, h100):
    target = tmp_path / "spec.json"
    args = {
        "root": h100,
        "search_paths": H100_DIRS,
        "path": str(target),
        "capabilities": ["graphics", "compute", "utility"],
    }
    rc, result = run_module(tmp_path, args)
    assert rc == 0 and result["changed"] is True
    assert result["capabilities"] == ["utility", "compute", "graphics"]
    assert result["libraries"]["libGLX_nvidia.so.0"] == "/usr/local/nvidia/lib64/libGLX_nvidia.so.0"
    assert "vulkan/implicit_layer.d/nvidia_layers.json" in result["missing"]
    assert "/usr/share/vulkan/icd.d/nvidia_icd.json" in target.read_text()
    rc, again = run_module(tmp_path, args)
    assert rc == 0 and again["changed"] is False
    rc, default = run_module(tmp_path, {"root": h100, "search_paths": H100_DIRS, "path": str(target)})
    assert rc == 0 and default["changed"] is True and default["capabilities"] == ["utility", "compute"]
    assert target.read_bytes() == (CORPUS / "h100" / "spec.json").read_bytes()


def test_module_refuses_an_unknown_capability_with_code_4_and_writes_nothing(tmp_path, h100):
    target = tmp_path / "spec.json"
    args = {"root": h100, "search_paths": H100_DIRS, "path": str(target), "capabilities": ["compute", "graphic"]}
    rc, result = run_module(tmp_path, args)
    assert rc != 0 and result["failed"] is True
    assert result["gpu_install_error"]["code"] == 4
    assert result["msg"].startswith("Unknown driver capability 'graphic'")
    assert not target.exists() and KEYS <= set(result)


def test_ansible_doc_documents_the_capabilities_option():
    doc = ansible_doc("cdi_spec")
    option = doc["doc"]["options"]["capabilities"]
    assert option["type"] == "list" and option["elements"] == "str" and option["default"] == ["compute", "utility"]
    assert set(doc["doc"]["options"]) == {
        "path",
        "state",
        "search_paths",
        "container_lib_dir",
        "capabilities",
        "caps",
        "root",
    }
    assert KEYS - {"changed"} | {"capabilities"} <= set(doc["return"])

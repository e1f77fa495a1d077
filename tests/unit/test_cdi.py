"""CDI spec generation (plugins/module_utils/cdi.py) over captured and fixture host trees."""

from __future__ import annotations

import copy
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
from conftest import module_utils

CORPUS = Path(__file__).resolve().parent / "cdi_corpus"
sys.path.insert(0, str(CORPUS))
import tree  # noqa: E402

cdi = module_utils("cdi")
H100_DIRS = ["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"]
needs_ldconfig = pytest.mark.skipif(tree.LDCONFIG is None, reason="ldconfig (glibc) is needed to build the cache")


@pytest.fixture
def h100(tmp_path):
    return str(tree.build(CORPUS / "h100", tmp_path / "h100"))


@pytest.fixture
def dgx8(tmp_path):
    if tree.LDCONFIG is None:
        pytest.fail("ldconfig (glibc's libc-bin) is needed to build the cache")
    return str(tree.build(CORPUS / "dgx8", tmp_path / "dgx8"))


def test_h100_capture_regenerates_the_spec_docker_ran_with_byte_for_byte(h100):
    spec, found = cdi.generate(root=h100, search_paths=H100_DIRS)
    assert cdi.dumps(spec) == (CORPUS / "h100" / "spec.json").read_bytes()
    assert [g.uuid for g in found.gpus] == ["GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca"]
    assert found.driver_version == "580.159.04"


def test_h100_libraries_by_stable_soname_and_wrapper_scripts_passed_over(h100):
    spec, found = cdi.generate(root=h100, search_paths=H100_DIRS)
    assert found.libraries["libcuda.so.1"] == "/usr/local/nvidia/lib64/libcuda.so.1"  # not libcuda.so.580.159.04
    assert found.libraries["libnvidia-ml.so.1"] == "/usr/local/nvidia/lib64/libnvidia-ml.so.1"
    # /usr/bin/nvidia-smi there is a shell wrapper that execs /usr/local/nvidia/bin/nvidia-smi
    assert found.binaries["nvidia-smi"] == "/usr/local/nvidia/bin/nvidia-smi"
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    assert mounts["/usr/bin/nvidia-smi"] == "/usr/local/nvidia/bin/nvidia-smi"
    assert mounts["/usr/lib/x86_64-linux-gnu/libcuda.so.1"] == "/usr/local/nvidia/lib64/libcuda.so.1"
    assert [d["name"] for d in spec["devices"]] == ["0", "GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca", "all"]


def test_h100_found_outside_the_linker_cache_through_search_paths(h100):
    Path(h100, "etc/ld.so.cache").unlink()
    spec, found = cdi.generate(root=h100, search_paths=H100_DIRS)
    assert cdi.dumps(spec) == (CORPUS / "h100" / "spec.json").read_bytes()
    with pytest.raises(cdi.CdiError) as err:
        cdi.generate(root=h100, search_paths=[])
    assert err.value.code == 3 and "libnvidia-ml.so.1 was not found" in err.value.reason


def test_eight_gpus_indexed_in_pci_order_with_their_own_minors(dgx8):
    spec, found = cdi.generate(root=dgx8)
    assert not cdi.validate(spec)
    by_name = {d["name"]: d["containerEdits"]["deviceNodes"] for d in spec["devices"]}
    assert len(spec["devices"]) == 17  # 8 by index, 8 by UUID, all
    assert by_name["0"] == [{"path": "/dev/nvidia2"}]  # 0000:18:00.0 has minor 2
    assert by_name["GPU-00000000-0000-4000-8000-000000000002"] == [{"path": "/dev/nvidia0"}]
    assert by_name["all"] == [{"path": f"/dev/nvidia{m}"} for m in range(8)]
    nodes = [n["path"] for n in spec["containerEdits"]["deviceNodes"]]
    assert nodes == ["/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidiactl"]
    mounts = {m["hostPath"]: m for m in spec["containerEdits"]["mounts"]}
    assert "/lib/firmware/nvidia/550.127.05/gsp_ga10x.bin" in mounts
    assert "/lib/firmware/nvidia/550.127.05/README" not in mounts
    assert "noexec" in mounts["/run/nvidia-persistenced/socket"]["options"]
    assert "/run/nvidia-fabricmanager/socket" in mounts
    assert "/usr/lib/x86_64-linux-gnu/libnvidia-gpucomp.so.550.127.05" in mounts
    assert "/usr/lib/x86_64-linux-gnu/libnvidia-encode.so.1" not in mounts  # video is not asked for
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "nvidia.com/gpu"


def test_caps_nodes_only_on_request(dgx8):
    plain, _ = cdi.generate(root=dgx8)
    with_caps, _ = cdi.generate(root=dgx8, caps=True)
    paths = [n["path"] for n in with_caps["containerEdits"]["deviceNodes"]]
    assert "/dev/nvidia-caps/nvidia-cap1" in paths
    assert not any("nvidia-caps" in n["path"] for n in plain["containerEdits"]["deviceNodes"])


def test_container_lib_dir_option(dgx8):
    spec, _ = cdi.generate(root=dgx8, container_lib_dir="/usr/lib64")
    assert "/usr/lib64/libcuda.so.1" in {m["containerPath"] for m in spec["containerEdits"]["mounts"]}


def test_two_runs_are_byte_identical_whatever_the_directory_order(dgx8, tmp_path):
    first = cdi.dumps(cdi.generate(root=dgx8)[0])
    assert cdi.dumps(cdi.generate(root=dgx8)[0]) == first
    again = shutil.copytree(dgx8, tmp_path / "copy", symlinks=True)  # another inode order
    assert cdi.dumps(cdi.generate(root=str(again))[0]) == first


def test_no_gpu_is_a_clear_refusal(tmp_path):
    root = tree.build(CORPUS / "nogpu", tmp_path / "nogpu")
    with pytest.raises(cdi.CdiError) as err:
        cdi.generate(root=str(root))
    assert err.value.code == 3
    assert err.value.reason.startswith("No NVIDIA GPU was found in /proc/driver/nvidia/gpus")
    assert err.value.record() == {"code": 3, "reason": err.value.reason}


def test_empty_host_is_a_clear_refusal(tmp_path):
    with pytest.raises(cdi.CdiError) as err:
        cdi.generate(root=str(tmp_path))
    assert err.value.code == 3 and "No NVIDIA GPU" in err.value.reason


def test_missing_gpu_node_means_driver_not_loaded(dgx8):
    Path(dgx8, "dev/nvidia5").unlink()
    with pytest.raises(cdi.CdiError, match="/dev/nvidia5 is missing"):
        cdi.generate(root=dgx8)


def test_stale_paths_after_a_driver_upgrade(dgx8):
    spec, _ = cdi.generate(root=dgx8)
    assert cdi.stale_paths(spec, dgx8) == []
    shutil.rmtree(Path(dgx8, "lib/firmware/nvidia/550.127.05"))
    assert cdi.stale_paths(spec, dgx8) == [
        "/lib/firmware/nvidia/550.127.05/gsp_ga10x.bin",
        "/lib/firmware/nvidia/550.127.05/gsp_tu10x.bin",
    ]


# --- the linker cache -------------------------------------------------------------
def test_ld_so_cache_parser_matches_ldconfig_p_on_the_h100_capture():
    data = (CORPUS / "h100" / "files" / "etc" / "ld.so.cache").read_bytes()
    parsed = [(s, p) for s, _f, p in cdi.parse_ld_so_cache(data)]
    listed = cdi.parse_ldconfig_p((CORPUS / "h100" / "device" / "ldconfig-p-nvidia.txt").read_text())
    wanted = [(s, p) for s, _d, p in listed]
    assert wanted and [e for e in parsed if e in wanted] == wanted
    assert all(flags == 0x0303 for _s, flags, _p in cdi.parse_ld_so_cache(data))


@needs_ldconfig
def test_ld_so_cache_parser_reads_what_real_ldconfig_wrote(tmp_path):
    root = tree.build(CORPUS / "dgx8", tmp_path / "t")
    entries = cdi.parse_ld_so_cache((root / "etc" / "ld.so.cache").read_bytes())
    assert ("libcuda.so.1", 0x0303, "/usr/lib/x86_64-linux-gnu/libcuda.so.1") in entries


def test_old_format_ld_so_cache():
    strings = b"libcuda.so.1\0/lib/libcuda.so.1\0"
    data = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + struct.pack("<iII", 0x0303, 0, 13) + strings
    assert cdi.parse_ld_so_cache(data) == [("libcuda.so.1", 0x0303, "/lib/libcuda.so.1")]


@pytest.mark.parametrize("data", [b"", b"glibc-ld.so.cache1.1", b"glibc-ld.so.cache1.1" + b"\xff" * 40, b"\0" * 100])
def test_truncated_ld_so_cache_reads_as_empty(data):
    assert cdi.parse_ld_so_cache(data) == []


def test_nvidia_smi_q_parser():
    text = (
        "==============NVSMI LOG==============\n\nAttached GPUs : 2\nGPU 00000000:3A:00.0\n"
        "    Product Name                          : NVIDIA H100 80GB HBM3\n"
        "    GPU UUID                              : GPU-aaaa\n    Minor Number                          : 1\n"
        "GPU 00000000:18:00.0\n    Product Name : NVIDIA H100 80GB HBM3\n    GPU UUID : GPU-bbbb\n"
        "    Minor Number : 0\n"
    )
    assert cdi.parse_nvidia_smi_q(text) == [
        ("0000:3a:00.0", "GPU-aaaa", 1, "NVIDIA H100 80GB HBM3"),
        ("0000:18:00.0", "GPU-bbbb", 0, "NVIDIA H100 80GB HBM3"),
    ]


# --- the validator ------------------------------------------------------------------
GOOD = json.loads((CORPUS / "h100" / "spec.json").read_text())


def broken(change):
    spec = copy.deepcopy(GOOD)
    change(spec)
    return spec


def test_generated_specs_validate():
    assert cdi.validate(GOOD) == []


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda s: s.pop("cdiVersion"), "cdiVersion None"),
        (lambda s: s.update(cdiVersion="1.0"), "is not a CDI version"),
        (lambda s: s.update(cdiVersion="0.9.0"), "not a released CDI version"),
        (lambda s: s.pop("kind"), "kind None"),
        (lambda s: s.update(kind="nvidia.com"), "is not vendor/class"),
        (lambda s: s.update(kind="-nvidia.com/gpu"), "vendor '-nvidia.com' is malformed"),
        (lambda s: s.update(kind="nvidia.com/g.pu"), "class 'g.pu' is malformed"),
        (lambda s: s.update(devices=[]), "devices must be a non-empty list"),
        (lambda s: s["devices"][0].update(name="-0"), "is not a valid device name"),
        (lambda s: s["devices"][0].update(name="a b"), "is not a valid device name"),
        (lambda s: s["devices"][1].update(name="0"), "duplicates devices[0]"),
        (lambda s: s["devices"][0].update(containerEdits={}), "has no containerEdits"),
        (lambda s: s["devices"][0]["containerEdits"]["deviceNodes"][0].update(path="dev/nvidia0"), "absolute path"),
        (lambda s: s["containerEdits"]["mounts"][0].update(hostPath="usr/lib/x"), "absolute path"),
        (lambda s: s["containerEdits"]["mounts"][0].pop("containerPath"), "needs containerPath"),
        (lambda s: s["containerEdits"].update(env=["NOEQUALS"]), "NAME=VALUE"),
        (lambda s: s["containerEdits"].update(hooks=[{"hookName": "createContainer", "path": "x"}]), "absolute"),
        (lambda s: s["containerEdits"].update(bogus=1), "unknown keys bogus"),
        (lambda s: s.update(extra=1), "unknown top-level keys extra"),
    ],
)
def test_validator_rejects_malformed_specs(change, phrase):
    problems = cdi.validate(broken(change))
    assert any(phrase in p for p in problems), problems


def test_validator_rejects_non_objects():
    assert cdi.validate([]) == ["the spec is not an object"]

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
    assert nodes == ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidiactl"]  # modeset: display only
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


def test_container_lib_dir_option_replaces_the_two_default_directories(dgx8):
    spec, _ = cdi.generate(root=dgx8, container_lib_dir="/usr/lib64")
    paths = {m["containerPath"] for m in spec["containerEdits"]["mounts"]}
    assert "/usr/lib64/libcuda.so.1" in paths and "/usr/lib/x86_64-linux-gnu/libcuda.so.1" not in paths
    assert "TRITON_LIBCUDA_PATH=/usr/lib64" in spec["containerEdits"]["env"]
    default, _ = cdi.generate(root=dgx8)
    paths = {m["containerPath"] for m in default["containerEdits"]["mounts"]}
    assert {"/usr/lib64/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"} <= paths


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


# --- driver capabilities over recorded driver layouts ----------------------------------------------
LAYOUTS = ("debian12", "ubuntu2404-cuda", "rhel9")
GRAPHICS_CORE = {
    "libGLX_nvidia.so.0",
    "libEGL_nvidia.so.0",
    "libGLESv2_nvidia.so.2",
    "libGLESv1_CM_nvidia.so.1",
    "libnvidia-fbc.so.1",
    "libnvoptix.so.1",
    "libnvidia-allocator.so.1",
}
VERSIONED_GRAPHICS = ("eglcore", "glcore", "tls", "glsi", "glvkspirv", "rtcore")


def graphics_libs(version, *extra):
    return GRAPHICS_CORE | {f"libnvidia-{n}.so.{version}" for n in VERSIONED_GRAPHICS} | set(extra)


COMPUTE_ALL = {
    "libcuda.so.1",
    "libcudadebugger.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-nvvm.so.4",
    "libnvidia-opencl.so.1",
}
VIDEO = {"libnvcuvid.so.1", "libnvidia-encode.so.1", "libnvidia-opticalflow.so.1", "vdpau/libvdpau_nvidia.so.1"}
# What each capability puts into the spec, per layout: names below the container's library directory.
EXPECTED_LIBRARIES = {
    "debian12": {  # libnvidia-cfg.so.1 sits in nvidia/, outside the linker's path; 535 has no gpucomp
        "utility": {"libnvidia-ml.so.1"},
        "compute": COMPUTE_ALL,
        "video": COMPUTE_ALL | VIDEO,
        "graphics": graphics_libs(
            "535.309.01", "libnvidia-egl-wayland.so.1", "libnvidia-egl-gbm.so.1", "gbm/nvidia-drm_gbm.so"
        ),
    },
    "ubuntu2404-cuda": {
        "utility": {"libnvidia-ml.so.1", "libnvidia-cfg.so.1"},
        "compute": COMPUTE_ALL | {"libnvidia-gpucomp.so.580.95.05"},
        "video": COMPUTE_ALL | {"libnvidia-gpucomp.so.580.95.05"} | VIDEO,
        "graphics": graphics_libs(
            "580.95.05",
            "libnvidia-egl-wayland.so.1",
            "libnvidia-egl-gbm.so.1",
            "libnvidia-egl-xcb.so.1",
            "libnvidia-egl-xlib.so.1",
            "gbm/nvidia-drm_gbm.so",
        ),
    },
    "rhel9": {  # NVIDIA's R515 RPMs: no cudadebugger, no gpucomp, no egl-gbm yet
        "utility": {"libnvidia-ml.so.1", "libnvidia-cfg.so.1"},
        "compute": COMPUTE_ALL - {"libcudadebugger.so.1"},
        "video": (COMPUTE_ALL - {"libcudadebugger.so.1"}) | VIDEO,
        "graphics": graphics_libs("515.86.01", "libnvidia-egl-wayland.so.1"),
    },
}
EXPECTED_CONFIGS = {
    "debian12": {
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "/usr/share/vulkan/icd.d/nvidia_icd.json",
        "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
        "/usr/share/nvidia/nvoptix.bin",
    },
    "ubuntu2404-cuda": {
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "/usr/share/vulkan/icd.d/nvidia_icd.json",
        "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xcb.json",
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xlib.json",
        "/usr/share/nvidia/nvoptix.bin",
    },
    "rhel9": {
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "/usr/share/vulkan/icd.d/nvidia_icd.x86_64.json",  # NVIDIA's RPMs name it by arch
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
    },
}
BROUGHT = {  # what a capability brings with it, as the toolkit does
    "utility": ["utility"],
    "compute": ["compute"],
    "video": ["compute", "video"],
    "graphics": ["graphics"],
    "display": ["graphics", "display"],
}
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64")  # every library is mounted in both


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    if tree.LDCONFIG is None:
        pytest.fail("ldconfig (glibc's libc-bin) is needed to build the cache")
    base = tmp_path_factory.mktemp("layouts")
    return {name: str(tree.build(CORPUS / name, base / name)) for name in LAYOUTS + ("h100",)}


def spec_for(root, capabilities, layout="debian12", **kwargs):
    if layout == "h100":
        kwargs.setdefault("search_paths", H100_DIRS)
    return cdi.generate(root=root, capabilities=capabilities, **kwargs)


def is_dev_name(name):
    """libcuda.so, libnvidia-ml.so, libGLX_indirect.so.0: the development names mounted beside the SONAMEs."""
    return cdi.so_link(name) == name or name in {n for names in cdi.DEV_NAMES.values() for n in names}


def library_names(spec, lib_dir):
    """Names below ``lib_dir`` in the container that are libraries by SONAME (development names left out)."""
    prefix = lib_dir + "/"
    names = {
        m["containerPath"][len(prefix) :]
        for m in spec["containerEdits"]["mounts"]
        if m["containerPath"].startswith(prefix)
    }
    return {n for n in names if "/" in n or not is_dev_name(n)}  # vdpau/ and gbm/ drivers have no dev names


def config_paths(spec):
    return {
        m["containerPath"]
        for m in spec["containerEdits"]["mounts"]
        if m["containerPath"].startswith(("/usr/share/", "/etc/")) and m["containerPath"] == m["hostPath"]
    }


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("capability", ["utility", "compute", "video", "graphics", "display"])
def test_each_capability_puts_its_libraries_into_the_spec_on_each_layout(layouts, layout, capability):
    spec, found = spec_for(layouts[layout], [capability], layout)
    assert not cdi.validate(spec)
    expected = EXPECTED_LIBRARIES[layout]["graphics" if capability == "display" else capability]
    for lib_dir in LIB_DIRS:
        assert library_names(spec, lib_dir) == expected, lib_dir
    graphical = capability in ("graphics", "display")
    assert config_paths(spec) == (EXPECTED_CONFIGS[layout] if graphical else set())
    assert found.capabilities == BROUGHT[capability]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_binaries_sockets_and_control_nodes_follow_the_capabilities(layouts, layout):
    def parts(capabilities):
        spec, _ = spec_for(layouts[layout], capabilities, layout)
        binaries = {
            m["containerPath"] for m in spec["containerEdits"]["mounts"] if m["containerPath"].startswith("/usr/bin/")
        }
        sockets = {m["hostPath"] for m in spec["containerEdits"]["mounts"] if m["hostPath"].startswith("/run/")}
        return binaries, sockets, [n["path"] for n in spec["containerEdits"]["deviceNodes"]]

    binaries, _sockets, nodes = parts(["utility"])
    assert binaries == {"/usr/bin/nvidia-smi", "/usr/bin/nvidia-debugdump", "/usr/bin/nvidia-persistenced"}
    assert nodes == ["/dev/nvidiactl"]
    binaries, sockets, nodes = parts(["compute"])
    assert binaries == {"/usr/bin/nvidia-cuda-mps-control", "/usr/bin/nvidia-cuda-mps-server"} and sockets == set()
    assert nodes == ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidiactl"]
    assert parts(["graphics"])[2] == ["/dev/nvidiactl"]
    assert parts(["display"])[2] == ["/dev/nvidia-modeset", "/dev/nvidiactl"]


def test_debian_libraries_come_through_the_alternatives_links_in_the_linker_path(layouts):
    spec, found = spec_for(layouts["debian12"], ["all"])
    # /usr/lib/x86_64-linux-gnu/libcuda.so.1 -> /etc/alternatives/... -> nvidia/current/libcuda.so.1
    assert found.libraries["libcuda.so.1"] == "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    assert found.libraries["vdpau/libvdpau_nvidia.so.1"] == "/usr/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.1"
    assert found.binaries["nvidia-smi"] == "/usr/bin/nvidia-smi"  # alternatives link to /usr/lib/nvidia/current
    assert found.binaries["nvidia-cuda-mps-server"] == "/usr/sbin/nvidia-cuda-mps-server"
    assert "libnvidia-cfg.so.1" in found.missing and "libnvidia-gpucomp.so.535.309.01" in found.missing
    assert not any("/nvidia/current/" in m["hostPath"] for m in spec["containerEdits"]["mounts"])


def test_vdpau_driver_and_gbm_backend_land_in_their_subdirectories(layouts):
    spec, _ = spec_for(layouts["ubuntu2404-cuda"], ["video", "graphics"], "ubuntu2404-cuda")
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    lib = "/usr/lib/x86_64-linux-gnu"
    assert mounts[f"{lib}/vdpau/libvdpau_nvidia.so.1"] == f"{lib}/vdpau/libvdpau_nvidia.so.1"
    assert mounts[f"{lib}/gbm/nvidia-drm_gbm.so"] == f"{lib}/gbm/nvidia-drm_gbm.so"
    spec, _ = spec_for(layouts["rhel9"], ["video"], "rhel9")
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    assert mounts["/usr/lib64/vdpau/libvdpau_nvidia.so.1"] == "/usr/lib64/vdpau/libvdpau_nvidia.so.1"


def test_config_files_are_mounted_read_only_at_their_own_path(layouts):
    spec, _ = spec_for(layouts["debian12"], ["graphics"])
    configs = [
        m
        for m in spec["containerEdits"]["mounts"]
        if m["hostPath"].endswith((".json", ".bin")) and "/share/" in m["hostPath"]
    ]
    assert len(configs) == len(EXPECTED_CONFIGS["debian12"])
    for mount in configs:
        assert mount["containerPath"] == mount["hostPath"] and mount["options"][0] == "ro"


def test_graphics_gives_each_gpu_its_own_drm_nodes(layouts):
    spec, found = spec_for(layouts["ubuntu2404-cuda"], ["graphics"], "ubuntu2404-cuda")
    by_name = {d["name"]: [n["path"] for n in d["containerEdits"]["deviceNodes"]] for d in spec["devices"]}
    assert by_name["0"] == ["/dev/nvidia0", "/dev/dri/card1", "/dev/dri/renderD128"]
    assert by_name["GPU-00000000-0000-4000-8000-0000000000a1"] == [
        "/dev/nvidia1",
        "/dev/dri/card2",
        "/dev/dri/renderD129",
    ]
    assert "/dev/dri/card0" not in by_name["all"]  # the BMC's VGA at 0000:03:00.0 is no NVIDIA GPU
    assert by_name["all"] == sorted(by_name["0"] + by_name["1"])
    assert found.gpus[0].as_dict()["drm_nodes"] == ["/dev/dri/card1", "/dev/dri/renderD128"]
    plain, _ = spec_for(layouts["ubuntu2404-cuda"], None, "ubuntu2404-cuda")
    assert not any("/dev/dri" in n["path"] for d in plain["devices"] for n in d["containerEdits"]["deviceNodes"])


def test_graphics_on_the_h100_capture_reports_what_is_missing_without_failing(layouts):
    spec, found = spec_for(layouts["h100"], ["compute", "utility", "graphics"], "h100")
    assert not cdi.validate(spec)
    assert GRAPHICS_CORE <= set(found.libraries)  # the sandbox ships the GL/EGL/GLES ICDs in /usr/local/nvidia
    assert found.configs == {  # /usr/share links into /usr/local/nvidia/share (captured on the lent H100)
        "glvnd/egl_vendor.d/10_nvidia.json": "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "vulkan/icd.d/nvidia_icd.json": "/usr/share/vulkan/icd.d/nvidia_icd.json",
    }
    for name in (
        "libnvidia-egl-wayland.so.1",
        "libnvidia-egl-gbm.so.1",
        "gbm/nvidia-drm_gbm.so",
        "vulkan/implicit_layer.d/nvidia_layers.json",
        "egl/egl_external_platform.d/15_nvidia_gbm.json",
        "/dev/dri (GPU 0000:00:06.0)",  # no nvidia-drm there
    ):
        assert name in found.missing
    assert spec["devices"][0]["containerEdits"]["deviceNodes"] == [{"path": "/dev/nvidia0"}]


def test_default_capabilities_keep_the_h100_spec_whatever_their_spelling(h100):
    expected = (CORPUS / "h100" / "spec.json").read_bytes()
    spellings = (
        None,
        ["compute", "utility"],
        ["utility", "compute", "compute"],
        "compute,utility",
        [" Compute ", "UTILITY"],
    )
    for capabilities in spellings:
        spec, found = cdi.generate(root=h100, search_paths=H100_DIRS, capabilities=capabilities)
        assert cdi.dumps(spec) == expected, capabilities
        assert found.capabilities == ["utility", "compute"]
    assert not any(e.startswith("NVIDIA_DRIVER_CAPABILITIES=") for e in json.loads(expected)["containerEdits"]["env"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_regenerate_their_recorded_spec_byte_for_byte(layouts, layout, tmp_path):
    expected = (CORPUS / layout / "spec-all.json").read_bytes()
    spec, _ = spec_for(layouts[layout], ["all"], layout)
    assert cdi.dumps(spec) == expected
    again = shutil.copytree(layouts[layout], tmp_path / "copy", symlinks=True)
    assert (
        cdi.dumps(spec_for(str(again), ["display", "video", "utility", "graphics", "compute"], layout)[0]) == expected
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_build_spec_narrows_a_full_discovery_to_the_same_spec_as_asking_for_less(layouts, layout):
    found = cdi.discover(root=layouts[layout], capabilities=["all"])
    for capabilities in (["utility"], ["compute"], ["video"], ["graphics"], ["display"], None):
        narrow, _ = spec_for(layouts[layout], capabilities, layout)
        wide = cdi.build_spec(found, capabilities=capabilities or ["compute", "utility"])
        assert cdi.dumps(wide) == cdi.dumps(narrow), capabilities
    small = cdi.discover(root=layouts[layout])
    with pytest.raises(cdi.CdiError, match="asked for graphics, which discovery did not look for"):
        cdi.build_spec(small, capabilities=["graphics"])


def test_utility_alone_needs_no_cuda_and_compute_does(dgx8):
    Path(dgx8, "usr/lib/x86_64-linux-gnu/libcuda.so.1").unlink()
    spec, found = cdi.generate(root=dgx8, capabilities=["utility"])
    assert "libnvidia-ml.so.1" in found.libraries and not cdi.validate(spec)
    with pytest.raises(cdi.CdiError) as err:
        cdi.generate(root=dgx8, capabilities=["video"])  # video brings compute, and compute needs libcuda
    assert err.value.code == 3 and "libcuda.so.1 was not found" in err.value.reason


@pytest.mark.parametrize(
    ("capabilities", "code", "phrase"),
    [
        (["compute", "compue"], 4, "Unknown driver capability 'compue'"),
        (["compat32"], 3, "compat32 (32-bit libraries) is not supported in CDI mode"),
        (["ngx", "utility"], 3, "ngx (NGX (DLSS) libraries) is not supported"),
        ([], 4, "No driver capability was given"),
        (" , ", 4, "No driver capability was given"),
    ],
)
def test_bad_capabilities_are_refused_before_the_host_is_read(tmp_path, capabilities, code, phrase):
    with pytest.raises(cdi.CdiError) as err:
        cdi.generate(root=str(tmp_path), capabilities=capabilities)  # an empty tree: no GPU would be code 3
    assert err.value.code == code and phrase in err.value.reason
    assert "utility, compute, video, graphics, display" in err.value.reason


def test_capability_names_normalize_to_canonical_order_with_what_they_bring():
    assert cdi.normalize_capabilities(None) == ("utility", "compute")
    assert cdi.normalize_capabilities(["display", "video"]) == ("compute", "video", "graphics", "display")
    assert cdi.normalize_capabilities("all") == cdi.CAPABILITIES
    assert cdi.normalize_capabilities(["graphics", "graphics"]) == ("graphics",)


# --- the recorded Debian layout is what Debian's packages hold -------------------------------------
def test_debian_fixture_holds_only_what_the_packages_and_their_alternatives_install():
    recorded = set()
    for line in (CORPUS / "debian12" / "packages.txt").read_text().splitlines():
        if line.startswith(("#", "##")) or not line.strip():
            continue
        name = line.split(None, 5)[5].split(" -> ")[0]
        recorded.add(name[1:].rstrip("/") or "/")
    alternatives = set()
    for line in (CORPUS / "debian12" / "alternatives.txt").read_text().splitlines():
        if not line.startswith("#"):
            link, alias, _target = line.split(" -> ")
            alternatives.update((link, alias))
    made_up = ("/dev/", "/sys/", "/run/", "/proc/")
    for kind, path, _target in tree.parse_listing((CORPUS / "debian12" / "listing.txt").read_text()):
        if path.startswith(made_up) or path in ("/dev", "/sys", "/run", "/etc/alternatives", "/usr/lib/nvidia/nvidia"):
            continue
        if path == "/etc/alternatives/nvidia":
            continue  # the master link of the alternative itself
        assert path in recorded or path in alternatives, (kind, path)

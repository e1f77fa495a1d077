"""gpu-install's CDI spec gives a container what NVIDIA's gives it without a hook binary (docs/cdi.md).

Properties, checked on every recorded layout (the H100 capture, dgx8, debian12, ubuntu2404-cuda, rhel9) and
on driver layouts derived from dgx8 here (libraries under /usr/lib64, under /usr/local/nvidia/lib64 with no
linker cache entry, two libcuda versions and a host CUDA compat directory, 32-bit libraries beside the
64-bit ones): every library is mounted in the multiarch directory and in /usr/lib64 from the same host
file; libcuda.so is the real libcuda.so.1 file; NVIDIA_CTK_LIBCUDA_DIR and TRITON_LIBCUDA_PATH name a
directory that holds both; the spec validates and is deterministic. Then an image's own libcuda (a CUDA
compat library in its linker cache), found in caches that the real ldconfig wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import module_utils

CORPUS = Path(__file__).resolve().parent / "cdi_corpus"
sys.path.insert(0, str(CORPUS))
import tree  # noqa: E402

cdi = module_utils("cdi")
HOST = module_utils("gpu_detect").Host
H100_DIRS = ["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"]
RECORDED = ("h100", "dgx8", "debian12", "ubuntu2404-cuda", "rhel9")
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
BOTH = (MULTIARCH, "/usr/lib64")


def _derived(tmp: Path, name: str, listing: str, ldconfig_dirs: list[str]) -> Path:
    """A corpus directory: dgx8's /proc (eight H100s, driver 550.127.05) with another library layout."""
    corpus = tmp / f"corpus-{name}"
    shutil.copytree(CORPUS / "dgx8" / "files", corpus / "files")
    (corpus / "listing.txt").write_text(listing)
    (corpus / "ldconfig.dirs").write_text("".join(d + "\n" for d in ldconfig_dirs))
    return corpus


def derived_layouts(tmp: Path) -> dict[str, tuple[Path, dict]]:
    """Driver layouts beyond the recorded ones, made from dgx8's listing: corpus dir and generate() kwargs."""
    base = (CORPUS / "dgx8" / "listing.txt").read_text()
    devices = "".join(
        line + "\n" for line in base.splitlines() if not line.startswith(("d /usr/lib", "f /usr/lib", "l /usr/lib"))
    )
    libs = "".join(
        line + "\n" for line in base.splitlines() if line.startswith(("d /usr/lib", "f /usr/lib", "l /usr/lib"))
    )
    version = "550.127.05"
    out: dict[str, tuple[Path, dict]] = {}
    # NVIDIA's RPM layout: everything in /usr/lib64, which the cache lists
    out["host-lib64"] = (
        _derived(tmp, "host-lib64", devices + libs.replace(MULTIARCH, "/usr/lib64"), ["/usr/lib64"]),
        {},
    )
    # nvidia-docker 1.0 / sandbox layout: no cache entry, found through search_paths
    out["host-local-nvidia"] = (
        _derived(tmp, "host-local-nvidia", devices + libs.replace(MULTIARCH, "/usr/local/nvidia/lib64"), []),
        {"search_paths": ["/usr/local/nvidia/lib64"]},
    )
    # an old libcuda left behind by an upgrade, and a host CUDA compat directory outside the linker's path
    leftovers = (
        f"f {MULTIARCH}/libcuda.so.535.54.03\t\n"
        "d /usr/local/cuda-12.8/compat\t\n"
        "f /usr/local/cuda-12.8/compat/libcuda.so.570.124.06\t\n"
        "l /usr/local/cuda-12.8/compat/libcuda.so.1\tlibcuda.so.570.124.06\n"
    )
    out["two-libcudas"] = (_derived(tmp, "two-libcudas", devices + libs + leftovers, [MULTIARCH]), {})
    # the driver's 32-bit libraries (ELF32 i386), listed first in the cache
    i386 = "/usr/lib/i386-linux-gnu"
    thirty_two = (
        f"d {i386}\t\n"
        f"f {i386}/libcuda.so.{version}\t\n"
        f"l {i386}/libcuda.so.1\tlibcuda.so.{version}\n"
        f"l {i386}/libcuda.so\tlibcuda.so.1\n"
        f"f {i386}/libnvidia-ml.so.{version}\t\n"
        f"l {i386}/libnvidia-ml.so.1\tlibnvidia-ml.so.{version}\n"
    )
    out["with-32bit"] = (_derived(tmp, "with-32bit", devices + thirty_two + libs, [i386, MULTIARCH]), {})
    # a driver installed without its development links (no lib*.so beside the libraries)
    bare = "".join(line + "\n" for line in libs.splitlines() if not line.split("\t")[0].endswith(".so"))
    out["no-dev-links"] = (_derived(tmp, "no-dev-links", devices + bare, [MULTIARCH]), {})
    return out


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """name -> (root, generate() kwargs) for every recorded and derived layout, built with the real ldconfig."""
    if tree.LDCONFIG is None:
        pytest.fail("ldconfig (glibc's libc-bin) is needed to build the cache")
    base = tmp_path_factory.mktemp("parity")
    out = {}
    for name in RECORDED:
        kwargs = {"search_paths": H100_DIRS} if name == "h100" else {}
        out[name] = (str(tree.build(CORPUS / name, base / name)), kwargs)
    for name, (corpus, kwargs) in derived_layouts(base).items():
        out[name] = (str(tree.build(corpus, base / name)), kwargs)
    return out


ALL_LAYOUTS = RECORDED + ("host-lib64", "host-local-nvidia", "two-libcudas", "with-32bit", "no-dev-links")


def lib_mounts(spec: dict, lib_dir: str) -> dict[str, str]:
    """name below ``lib_dir`` -> host path, for the spec's mounts there."""
    prefix = lib_dir + "/"
    return {
        m["containerPath"][len(prefix) :]: m["hostPath"]
        for m in spec["containerEdits"]["mounts"]
        if m["containerPath"].startswith(prefix)
    }


def env_of(spec: dict) -> dict[str, str]:
    return dict(e.split("=", 1) for e in spec["containerEdits"]["env"])


def assert_parity(spec: dict, found, root: str) -> None:
    """The properties every spec of this generator has, whatever the host's layout."""
    assert cdi.validate(spec) == []
    dirs = cdi.container_lib_dirs_for(found.arch)
    assert dirs == BOTH  # x86_64 hosts, all of these
    first = lib_mounts(spec, dirs[0])
    # every library, by SONAME and by development name, in each directory, from the same host file
    for lib_dir in dirs[1:]:
        assert lib_mounts(spec, lib_dir) == first, lib_dir
    assert set(found.libraries) <= set(first)
    for name, path in first.items():
        assert found.libraries.get(name, found.libraries.get(found.dev_names.get(name, ""))) == path, name
        assert HOST(root).exists(path), path  # links resolved inside the tree, as on the host
        # nothing 32-bit, nothing from a CUDA compat directory: the 64-bit driver's own files
        assert "/i386-linux-gnu/" not in path and "/compat/" not in path, path
    # libcuda.so is the real libcuda.so.1 file, bind-mounted (CDI has no symlink edit)
    assert first["libcuda.so"] == first["libcuda.so.1"] == found.libraries["libcuda.so.1"]
    # Triton and NVIDIA's variable name a directory that holds libcuda.so.1 and libcuda.so
    env = env_of(spec)
    assert env["TRITON_LIBCUDA_PATH"] == env["NVIDIA_CTK_LIBCUDA_DIR"] == dirs[0]
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    # no hook: nothing on the host needs NVIDIA's nvidia-cdi-hook
    assert "hooks" not in spec["containerEdits"]
    assert not any("hooks" in d["containerEdits"] for d in spec["devices"])


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_every_library_is_in_both_directories_with_libcuda_so_and_the_libcuda_env(trees, layout):
    root, kwargs = trees[layout]
    spec, found = cdi.generate(root=root, **kwargs)
    assert_parity(spec, found, root)


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_the_spec_is_the_same_whatever_order_discovery_found_things_in(trees, layout):
    root, kwargs = trees[layout]
    spec, found = cdi.generate(root=root, **kwargs)
    found.libraries = dict(reversed(list(found.libraries.items())))
    found.dev_names = dict(reversed(list(found.dev_names.items())))
    assert cdi.dumps(cdi.build_spec(found)) == cdi.dumps(spec)
    assert cdi.dumps(cdi.generate(root=root, **kwargs)[0]) == cdi.dumps(spec)


@pytest.mark.parametrize("layout", ("debian12", "ubuntu2404-cuda", "rhel9"))
def test_every_capability_keeps_the_properties(trees, layout):
    root, _ = trees[layout]
    spec, found = cdi.generate(root=root, capabilities=["all"])
    assert_parity(spec, found, root)
    first = lib_mounts(spec, MULTIARCH)
    # NVIDIA's fixed development names (internal/discover/symlinks.go), whatever the host has
    assert first["libGLX_indirect.so.0"] == first["libGLX_nvidia.so.0"]
    assert first["libnvidia-opticalflow.so"] == first["libnvidia-opticalflow.so.1"]


def test_plain_so_names_follow_the_host_links_beside_the_library(trees):
    # the H100 has a .so link for every library in /usr/local/nvidia/lib64; Ubuntu's packages only libcuda.so
    h100_root, kwargs = trees["h100"]
    _, found = cdi.generate(root=h100_root, **kwargs)
    assert found.dev_names["libnvidia-ml.so"] == "libnvidia-ml.so.1"
    assert found.dev_names["libnvidia-gpucomp.so"] == "libnvidia-gpucomp.so.580.159.04"
    ubuntu_root, _ = trees["ubuntu2404-cuda"]
    _, found = cdi.generate(root=ubuntu_root, capabilities=["all"])
    assert found.dev_names == {
        "libcuda.so": "libcuda.so.1",
        "libnvidia-opticalflow.so": "libnvidia-opticalflow.so.1",
        "libGLX_indirect.so.0": "libGLX_nvidia.so.0",
    }


def test_libcuda_so_is_given_even_where_the_host_has_no_development_links(trees):
    root, _ = trees["no-dev-links"]
    assert not HOST(root).lexists(f"{MULTIARCH}/libcuda.so")
    spec, found = cdi.generate(root=root)
    assert found.dev_names == {"libcuda.so": "libcuda.so.1"}  # as NVIDIA's hook makes it whatever the host has
    assert lib_mounts(spec, "/usr/lib64")["libcuda.so"] == f"{MULTIARCH}/libcuda.so.1"


def test_a_dangling_so_link_on_the_host_gives_no_development_name(trees, tmp_path):
    root = shutil.copytree(trees["h100"][0], tmp_path / "h100", symlinks=True)
    link = root / "usr/local/nvidia/lib64/libnvidia-ml.so"
    link.unlink()
    link.symlink_to("libnvidia-ml.so.0.gone")
    _, found = cdi.generate(root=str(root), search_paths=H100_DIRS)
    assert "libnvidia-ml.so" not in found.dev_names and "libcuda.so" in found.dev_names


def test_utility_alone_sets_no_libcuda_variables(trees):
    root, _ = trees["dgx8"]
    spec, _ = cdi.generate(root=root, capabilities=["utility"])
    assert set(env_of(spec)) == {"NVIDIA_VISIBLE_DEVICES"}
    assert "libcuda.so" not in lib_mounts(spec, MULTIARCH)
    assert lib_mounts(spec, MULTIARCH) == lib_mounts(spec, "/usr/lib64")


@pytest.mark.parametrize(
    ("arch", "dirs"),
    [
        ("aarch64", ("/usr/lib/aarch64-linux-gnu", "/usr/lib64")),
        ("ppc64le", ("/usr/lib/powerpc64le-linux-gnu", "/usr/lib64")),
        ("riscv64", ("/usr/lib64",)),  # no multiarch name known: /usr/lib64 alone
        (None, ("/usr/lib64",)),
    ],
)
def test_other_architectures_get_their_own_multiarch_directory_and_usr_lib64(trees, arch, dirs):
    root, _ = trees["dgx8"]
    found = cdi.discover(root=root)
    found.arch = arch
    spec = cdi.build_spec(found)
    assert cdi.validate(spec) == []
    assert cdi.container_lib_dirs_for(arch) == dirs
    for lib_dir in dirs:
        assert lib_mounts(spec, lib_dir) == lib_mounts(spec, dirs[0])
        assert lib_mounts(spec, lib_dir)["libcuda.so"] == found.libraries["libcuda.so.1"]
    assert env_of(spec)["TRITON_LIBCUDA_PATH"] == env_of(spec)["NVIDIA_CTK_LIBCUDA_DIR"] == dirs[0]
    others = {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64"} - set(dirs)
    assert not any(lib_mounts(spec, d) for d in others)


def test_golden_specs_are_what_the_generator_writes_today(tmp_path):
    """regenerate.py writes the golden files; a behaviour change must show up in their diff."""
    sys.path.insert(0, str(CORPUS))
    import regenerate  # noqa: E402

    copy = shutil.copytree(CORPUS, tmp_path / "corpus")
    regenerate.CORPUS = copy
    regenerate.main()
    for name in ("h100/spec.json", "debian12/spec-all.json", "ubuntu2404-cuda/spec-all.json", "rhel9/spec-all.json"):
        assert (copy / name).read_bytes() == (CORPUS / name).read_bytes(), name


# ---------------------------------------------------------------------------
# An image's own libcuda in its linker cache (doctor --image), caches written by the real ldconfig
# ---------------------------------------------------------------------------
def image_tree(tmp: Path, name: str, conf: dict[str, str], files: str) -> Path:
    """An image's root with /etc/ld.so.conf including ld.so.conf.d/*.conf (``conf``: file -> directory) and
    the listed libraries; its /etc/ld.so.cache is made by the real ``ldconfig -r`` over that configuration."""
    corpus = tmp / f"image-{name}"
    (corpus / "files/etc/ld.so.conf.d").mkdir(parents=True)
    (corpus / "files/etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    for filename, directory in conf.items():
        (corpus / "files/etc/ld.so.conf.d" / filename).write_text(directory + "\n")
    (corpus / "listing.txt").write_text(files)
    return tree.build(corpus, tmp / name)


COMPAT = (
    "d /usr/local/cuda-12.2/compat\t\n"
    "f /usr/local/cuda-12.2/compat/libcuda.so.535.104.05\t\n"
    "l /usr/local/cuda-12.2/compat/libcuda.so.1\tlibcuda.so.535.104.05\n"
    "d /usr/lib/x86_64-linux-gnu\t\n"
    "f /usr/lib/x86_64-linux-gnu/libz.so.1.2.13\t\n"
    "l /usr/lib/x86_64-linux-gnu/libz.so.1\tlibz.so.1.2.13\n"
)
SYSTEM_CONF = {"x86_64-linux-gnu.conf": "/usr/lib/x86_64-linux-gnu"}


@pytest.fixture
def needs_ldconfig():
    if tree.LDCONFIG is None:
        pytest.fail("ldconfig (glibc's libc-bin) is needed to build the cache")


def cache_of(root: Path) -> bytes:
    return (root / "etc/ld.so.cache").read_bytes()


@pytest.mark.parametrize("conf_name", ["000_cuda-compat.conf", "cuda-compat.conf", "zz-cuda-compat.conf"])
def test_a_compat_libcuda_in_the_image_cache_is_found_whatever_its_config_file_is_called(
    needs_ldconfig, tmp_path, conf_name
):
    # with no libcuda of the image's own in the default directories, the compat one is the cache's only entry
    root = image_tree(tmp_path, "compat", {**SYSTEM_CONF, conf_name: "/usr/local/cuda-12.2/compat"}, COMPAT)
    path = cdi.image_libcuda(cache_of(root), "x86_64", BOTH)
    assert path == "/usr/local/cuda-12.2/compat/libcuda.so.1"
    assert cdi.libcuda_version(os.path.realpath(root / path.lstrip("/"))) == "535.104.05"


def test_the_first_cache_entry_decides_as_the_loader_does(needs_ldconfig, tmp_path):
    own = COMPAT + (
        "f /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05\t\n"
        "l /usr/lib/x86_64-linux-gnu/libcuda.so.1\tlibcuda.so.580.95.05\n"
    )
    # the image's multiarch directory first: the spec's mount over that path is what the loader opens
    later = image_tree(tmp_path, "later", {"00-system.conf": MULTIARCH, "zz.conf": "/usr/local/cuda-12.2/compat"}, own)
    entries = [p for s, _f, p in cdi.parse_ld_so_cache(cache_of(later)) if s == "libcuda.so.1"]
    assert entries == [f"{MULTIARCH}/libcuda.so.1", "/usr/local/cuda-12.2/compat/libcuda.so.1"]
    assert cdi.image_libcuda(cache_of(later), "x86_64", BOTH) is None
    # the compat directory first: it wins over the mount
    first = image_tree(tmp_path, "first", {"000.conf": "/usr/local/cuda-12.2/compat", "x.conf": MULTIARCH}, own)
    assert cdi.image_libcuda(cache_of(first), "x86_64", BOTH) == "/usr/local/cuda-12.2/compat/libcuda.so.1"
    # a spec written for one directory only: the multiarch entry is then the image's own
    assert cdi.image_libcuda(cache_of(later), "x86_64", ["/usr/lib64"]) == f"{MULTIARCH}/libcuda.so.1"


def test_merged_usr_spellings_and_other_architectures_do_not_count(needs_ldconfig, tmp_path):
    own = "d /lib/x86_64-linux-gnu\t\nf /lib/x86_64-linux-gnu/libcuda.so.580.95.05\t\n"
    own += "l /lib/x86_64-linux-gnu/libcuda.so.1\tlibcuda.so.580.95.05\n"
    merged = image_tree(tmp_path, "merged", {"x.conf": "/lib/x86_64-linux-gnu"}, own)
    assert cdi.image_libcuda(cache_of(merged), "x86_64", BOTH) is None  # /lib/x86_64-linux-gnu is /usr/lib/...
    i386 = "d /usr/lib/i386-linux-gnu\t\nf /usr/lib/i386-linux-gnu/libcuda.so.535.104.05\t\n"
    i386 += "l /usr/lib/i386-linux-gnu/libcuda.so.1\tlibcuda.so.535.104.05\n"
    only32 = image_tree(tmp_path, "only32", {"i386.conf": "/usr/lib/i386-linux-gnu"}, i386)
    assert [f for s, f, _p in cdi.parse_ld_so_cache(cache_of(only32)) if s == "libcuda.so.1"] == [0x0003]
    assert cdi.image_libcuda(cache_of(only32), "x86_64", BOTH) is None
    clean = image_tree(tmp_path, "clean", SYSTEM_CONF, COMPAT)  # compat files present, not in the configuration
    assert cdi.image_libcuda(cache_of(clean), "x86_64", BOTH) is None
    assert cdi.image_libcuda(b"", "x86_64", BOTH) is None


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        ("535.104.05", "580.95.05", -1),
        ("580.95.05", "580.95.05", 0),
        ("580.95.5", "580.95.05", 0),
        ("590.1", "580.159.04", 1),
        ("580.159.04", "580.95.05", 1),
        ("580", "580.0.1", -1),
    ],
)
def test_driver_versions_compare_numerically(left, right, order):
    assert cdi.version_order(left, right) == order


def test_libcuda_versions_come_from_the_file_name_only():
    assert cdi.libcuda_version("/usr/local/cuda/compat/libcuda.so.535.104.05") == "535.104.05"
    assert cdi.libcuda_version("/usr/local/cuda/compat/libcuda.so.1") is None
    assert cdi.libcuda_version("libcuda.so") is None and cdi.libcuda_version(None) is None


# ---------------------------------------------------------------------------
# doctor --image: the check, and what it reads from a real Docker
# ---------------------------------------------------------------------------
doctor_checks = pytest.importorskip("gpu_install.doctor_checks")
H100_VIEW = {"available": True, "driver_version": "580.159.04"}


def with_libcuda(path, version, via="ld.so.cache", env=None, error=None):
    return {
        "name": "example/pytorch:24.01",
        "found": True,
        "env": env or ["LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"],
        "libcuda": {"path": path, "version": version, "via": via, "lib_dirs": list(BOTH), "error": error},
    }


def test_an_older_compat_libcuda_fails_in_one_sentence_with_the_fix():
    c = doctor_checks.check_image_libcuda(
        with_libcuda("/usr/local/cuda/compat/libcuda.so.1", "535.104.05"), {}, H100_VIEW
    )
    assert c["status"] == "fail" and c["id"] == "image_libcuda"
    assert "535.104.05" in c["message"] and "580.159.04" in c["message"] and c["message"].count(". ") == 0
    assert "/etc/ld.so.conf.d" in c["fix"]
    assert "-e LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/local/nvidia/lib:/usr/local/nvidia/lib64" in c["fix"]


def test_a_newer_compat_libcuda_is_forward_compatibility_and_only_a_note():
    c = doctor_checks.check_image_libcuda(
        with_libcuda("/usr/local/cuda/compat/libcuda.so.1", "590.44.01"), {}, H100_VIEW
    )
    assert c["status"] == "info" and "forward compatibility" in c["message"] and "804" in c["message"]


def test_the_same_version_none_at_all_unknown_and_unreadable():
    same = doctor_checks.check_image_libcuda(with_libcuda("/opt/x/libcuda.so.1", "580.159.04"), {}, H100_VIEW)
    assert same["status"] == "pass"
    none = doctor_checks.check_image_libcuda(with_libcuda(None, None), {}, H100_VIEW)
    assert none["status"] == "pass" and "/usr/lib/x86_64-linux-gnu" in none["message"]
    unknown = doctor_checks.check_image_libcuda(with_libcuda("/opt/x/libcuda.so.1", None), {}, H100_VIEW)
    assert unknown["status"] == "warn" and unknown["fix"]
    error = doctor_checks.check_image_libcuda(with_libcuda(None, None, error="Docker answered HTTP 500"), {}, H100_VIEW)
    assert error["status"] == "skip"
    # the host's version from the facts when NVML is not available
    facts = {"driver": {"loaded": True, "version": "580.159.04"}}
    older = doctor_checks.check_image_libcuda(
        with_libcuda("/c/libcuda.so.1", "535.104.05"), facts, {"available": False}
    )
    assert older["status"] == "fail"


def test_through_ld_library_path_the_fix_drops_that_directory():
    image = with_libcuda(
        "/usr/local/cuda/compat/libcuda.so.1",
        "535.104.05",
        via="LD_LIBRARY_PATH",
        env=["LD_LIBRARY_PATH=/usr/local/cuda/compat:/opt/lib"],
    )
    c = doctor_checks.check_image_libcuda(image, {}, H100_VIEW)
    assert c["status"] == "fail" and "LD_LIBRARY_PATH" in c["message"]
    assert "-e LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/opt/lib," in c["fix"]


def test_no_check_without_what_doctor_reads_in_cdi_mode():
    assert doctor_checks.check_image_libcuda({"name": "x", "found": True, "env": []}, {}, H100_VIEW) is None


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "version"], capture_output=True, timeout=30, check=False).returncode == 0


@pytest.mark.skipif(not _docker_answers(), reason="no Docker daemon answers here")
def test_doctor_reads_an_images_compat_libcuda_from_docker_without_running_it(needs_ldconfig, tmp_path):
    from gpu_install.commands import doctor

    root = image_tree(tmp_path, "compat", {**SYSTEM_CONF, "000_cuda.conf": "/usr/local/cuda-12.2/compat"}, COMPAT)
    name = f"local/gpu-install-test-compat:{uuid.uuid4().hex[:12]}"
    with tarfile.open(tmp_path / "image.tar", "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run(
        ["docker", "import", "-c", "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64", str(tmp_path / "image.tar"), name],
        check=True,
        capture_output=True,
    )
    try:
        sock = doctor.docker_socket()
        image = doctor.gather_image(sock, name)
        found = doctor.gather_image_libcuda(sock, image)
        left = ["docker", "ps", "-aq", "--filter", f"ancestor={name}"]
        assert subprocess.run(left, capture_output=True, text=True, check=True).stdout == ""  # removed
        assert found["error"] is None
        assert found["path"] == "/usr/local/cuda-12.2/compat/libcuda.so.1" and found["via"] == "ld.so.cache"
        assert found["version"] == "535.104.05"  # from the link's target, as Docker's stat resolves it
        image["libcuda"] = found
        assert doctor_checks.check_image_libcuda(image, {}, H100_VIEW)["status"] == "fail"
    finally:
        subprocess.run(["docker", "rmi", "-f", name], capture_output=True, check=False)

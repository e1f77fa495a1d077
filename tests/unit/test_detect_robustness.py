"""Detection never raises: random bytes in every file it reads give facts, not tracebacks."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path

from conftest import module_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

gpu_detect = module_utils("gpu_detect")

CORPUS = Path(__file__).resolve().parent / "corpus"

# Every file detect() reads as text or bytes, by its path inside the root.
READ_FILES = [
    "etc/os-release",
    "usr/lib/os-release",
    "var/lib/dpkg/status",
    "var/lib/dpkg/arch",
    "var/lib/rpm/rpmdb.sqlite",
    "proc/sys/kernel/arch",
    "proc/sys/kernel/osrelease",
    "proc/version",
    "proc/modules",
    "proc/driver/nvidia/version",
    "proc/driver/nvidia/gpus/0000:00:06.0/information",
    "sys/module/nvidia/version",
    "sys/bus/pci/devices/0000:00:06.0/vendor",
    "sys/bus/pci/devices/0000:00:06.0/class",
    "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
    "snap/docker/current/meta/snap.yaml",
    "run/nvidia-persistenced/nvidia-persistenced.pid",
    "bin/sh",
    "proc/device-tree/compatible",
]

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_as_os_release_never_raise(data):
    gpu_detect.parse_os_release(data.decode("utf-8", "replace"))


@FAST
@given(st.text(max_size=2048))
def test_random_text_as_os_release_never_raises(text):
    parsed = gpu_detect.parse_os_release(text)
    assert all(isinstance(v, str) for v in parsed.values())


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes_as_dpkg_status_never_raise(data):
    gpu_detect.parse_dpkg_status(data.decode("utf-8", "replace"))


@FAST
@given(st.binary(max_size=512))
def test_random_rpm_header_blobs_raise_only_the_errors_the_reader_skips(blob):
    try:
        fields = gpu_detect._rpm_header_fields(blob)
    except (struct.error, ValueError, IndexError, TypeError):
        return
    assert isinstance(fields, dict)


@FAST
@given(st.binary(max_size=64))
def test_random_elf_headers_never_raise(header):
    assert gpu_detect.elf_arch(header) in (None, *[row[3] for row in gpu_detect.ELF_MACHINES])


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(READ_FILES), st.binary(max_size=600), min_size=1))
def test_random_bytes_in_every_file_give_json_facts(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, data in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        facts = gpu_detect.detect(str(root))
        json.dumps(facts)
        assert "detection_incomplete" not in [p["code"] for p in facts["problems"]]
        assert facts["supported"] is (not any(p["refuses"] for p in facts["problems"]))


def test_symlink_loops_inside_root_do_not_hang_or_raise(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("/etc/os-release")  # points at itself inside root
    (tmp_path / "lib").symlink_to("lib")
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0\n")
    facts = gpu_detect.detect(str(tmp_path))
    assert facts["problems"][0]["code"] == "os_release_missing"
    assert facts["kernel"]["headers_installed"] is False


def test_links_cannot_escape_the_root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("../../../../../../../../etc/os-release")
    facts = gpu_detect.detect(str(tmp_path))
    assert facts["problems"][0]["code"] == "os_release_missing"


def test_directories_where_files_are_expected_read_as_absent(tmp_path):
    for rel in READ_FILES:
        (tmp_path / rel).mkdir(parents=True, exist_ok=True)
    facts = gpu_detect.detect(str(tmp_path))
    json.dumps(facts)
    assert "detection_incomplete" not in [p["code"] for p in facts["problems"]]


def test_unreadable_files_read_as_absent(tmp_path):
    root = shutil.copytree(CORPUS / "dgx-h100-ubuntu2204", tmp_path / "t", symlinks=True)
    status = root / "var/lib/dpkg/status"
    status.unlink()
    status.symlink_to("/proc/self/mem")  # inside the root: a missing file, never the real one
    facts = gpu_detect.detect(str(root))
    assert facts["docker"]["flavour"] is None


def test_a_failing_section_degrades_to_a_problem_not_a_traceback(tmp_path, monkeypatch):
    def boom(host):
        raise RuntimeError("simulated")

    monkeypatch.setattr(gpu_detect, "detect_tegra", boom)
    facts = gpu_detect.detect(str(tmp_path))
    problem = next(p for p in facts["problems"] if p["code"] == "detection_incomplete")
    assert "Tegra" in problem["message"] and "simulated" in problem["message"]
    assert facts["tegra"] is False

"""Live detail on long steps: the newest line of the log written most recently (dpkg, DKMS)."""

from __future__ import annotations

import os
import time

from gpu_install.progress import activity


def test_activity_shows_the_last_line_of_the_log_written_last(tmp_path):
    term = tmp_path / "term.log"
    make = tmp_path / "dkms" / "nvidia" / "535" / "build" / "make.log"
    make.parent.mkdir(parents=True)
    start = time.time() - 10
    term.write_text("Log started\nUnpacking nvidia-driver (535.261-1) ...\n")
    os.utime(term, (start + 1, start + 1))
    make.write_text("  CC [M]  nvidia/nv.o\n  CC [M]  nvidia/nv-pci.o\n")
    os.utime(make, (start + 2, start + 2))
    patterns = (str(tmp_path / "dkms/*/*/build/make.log"), str(term))
    none = str(tmp_path / "partial" / "*.deb")
    assert activity(start, patterns, none) == "dkms: CC [M]  nvidia/nv-pci.o"
    os.utime(term, (start + 3, start + 3))
    assert activity(start, patterns, none).startswith("dpkg: Unpacking nvidia-driver")


def test_a_download_under_way_is_shown_with_its_size(tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "nvidia-driver-libs_535.261-1_amd64.deb").write_bytes(b"x" * 2_500_000)
    shown = activity(time.time() - 5, (), str(partial / "*.deb"))
    assert shown == "download: nvidia-driver-libs 2.5 MB"


def test_logs_older_than_the_run_are_not_shown(tmp_path):
    term = tmp_path / "term.log"
    term.write_text("Setting up old-package ...\n")
    os.utime(term, (100, 100))
    assert activity(time.time() - 5, (str(term),), str(tmp_path / "none" / "*.deb")) == ""

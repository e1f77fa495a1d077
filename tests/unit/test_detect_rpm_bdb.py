"""rpm's Berkeley DB ``Packages`` file (RHEL 8 and its rebuilds), read by the pure-Python ``bdb_hash``.

The Berkeley DB files are FIXTURES BUILT AT TEST TIME: empty stand-in rpms are built with the real
``rpmbuild`` and installed into an sqlite rpmdb with the real ``rpm`` (as test_detect_packages.py does),
their header blobs are taken from its ``Packages`` table and loaded with the real ``db_load -t hash``
(Debian package db-util) under rpm's keys, 4-byte header instance numbers, plus rpm's key-0 record.
Nothing is skipped: without rpm, rpmbuild or db_load the fixtures fail and say what to install.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import module_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_detect_packages import SPEC, make_tree

gpu_detect = module_utils("gpu_detect")
bdb_hash = module_utils("bdb_hash")

CORPUS = Path(__file__).resolve().parent / "corpus"
RHEL8 = (CORPUS / "os-release" / "rhel-8.10").read_text()
ROCKY8 = (CORPUS / "os-release" / "rocky-8.9").read_text()

# name, epoch, version, release, arch: what a RHEL 8 host with Docker CE and the toolkit has
EL8_RPMS = [
    ("docker-ce", "3", "24.0.7", "1.el8", "x86_64"),
    ("docker-ce-cli", "1", "24.0.7", "1.el8", "x86_64"),
    ("containerd.io", None, "1.6.24", "3.1.el8", "x86_64"),
    ("nvidia-container-toolkit", None, "1.14.3", "1", "x86_64"),
    ("glibc", None, "2.28", "236.el8_9.7", "x86_64"),
]

# (page size, byte order, extra db_load settings) of each Berkeley DB variant built
VARIANTS = {
    "le-512": (512, "<", []),  # small pages: every header goes to an overflow chain
    "be-512": (512, ">", []),  # a big-endian database (as written on s390x or ppc64)
    "le-64k": (65536, "<", []),  # large pages: every header sits on its hash page
    "le-4k-chksum": (4096, "<", ["chksum=1"]),  # page checksums move the page header's end
}


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"{' or '.join(names)} is needed to build the Berkeley DB fixtures: install it "
        "(apt-get install db-util rpm); scripts/test installs both",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def el8_rpmdb(tmp_path_factory) -> Path:
    """FIXTURE: a real sqlite rpmdb holding the EL8 stand-in rpms, built with rpmbuild and rpm."""
    rpmbuild, rpm = _tool("rpmbuild"), _tool("rpm")
    base = tmp_path_factory.mktemp("el8-rpms")
    spec = base / "stand-in.spec"
    spec.write_text(SPEC)
    top = base / "rpmbuild"
    files = []
    for name, epoch, version, release, arch in EL8_RPMS:
        defines = ["--define", f"_topdir {top}", "--define", f"pkg {name}", "--define", f"ver {version}"]
        defines += ["--define", f"rel {release}", "--define", "_build_id_links none"]
        if epoch:
            defines += ["--define", f"ep {epoch}"]
        subprocess.run(
            [rpmbuild, "-bb", "--quiet", "--target", arch, *defines, str(spec)], check=True, capture_output=True
        )
        files.append(str(next((top / "RPMS" / arch).glob(f"{name}-{version}-{release}.{arch}.rpm"))))
    dbpath = base / "var/lib/rpm"
    dbpath.mkdir(parents=True)
    cmd = [rpm, "--dbpath", str(dbpath), "--define", "_db_backend sqlite"]
    subprocess.run([*cmd, "--initdb"], check=True, capture_output=True)
    subprocess.run(
        [*cmd, "-i", "--justdb", "--nodeps", "--noscripts", "--ignorearch", "--ignoreos", *files],
        check=True,
        capture_output=True,
    )
    return dbpath / "rpmdb.sqlite"


@pytest.fixture(scope="module")
def rpm_blobs(el8_rpmdb) -> dict:
    """FIXTURE: {header instance: rpm header blob}, from the sqlite rpmdb's Packages table."""
    conn = sqlite3.connect(el8_rpmdb)
    blobs = {hnum: bytes(blob) for hnum, blob in conn.execute("SELECT hnum, blob FROM Packages")}
    conn.close()
    assert len(blobs) == len(EL8_RPMS)
    return blobs


def db_load(
    path: Path, records: list, pagesize: int, order: str, settings_: tuple | list = (), duplicates: bool = False
):
    """Load (key, value) records into a new Berkeley DB hash file with the real db_load."""
    lines = ["VERSION=3", "format=bytevalue", "type=hash", f"db_pagesize={pagesize}"]
    lines += [f"db_lorder={'1234' if order == '<' else '4321'}"]
    lines += [*settings_, *(["duplicates=1"] if duplicates else []), "HEADER=END"]
    for key, value in records:
        lines += [" " + key.hex(), " " + value.hex()]
    lines.append("DATA=END")
    dump = path.with_suffix(".dump")
    dump.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [_tool("db_load", "db5.3_load"), "-f", str(dump), "-t", "hash", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return path


def rpm_records(blobs: dict, order: str) -> list:
    """rpm's records: key 0 holds the last header instance, then instance -> header blob."""
    records = [(struct.pack(f"{order}I", 0), struct.pack(f"{order}I", max(blobs)))]
    return records + [(struct.pack(f"{order}I", hnum), blob) for hnum, blob in sorted(blobs.items())]


@pytest.fixture(scope="module")
def bdb_rpmdbs(rpm_blobs, tmp_path_factory) -> dict:
    """FIXTURE: real Berkeley DB hash ``Packages`` files, one per VARIANTS entry, built with db_load."""
    base = tmp_path_factory.mktemp("bdb")
    return {
        name: db_load(base / f"{name}-Packages", rpm_records(rpm_blobs, order), pagesize, order, extra)
        for name, (pagesize, order, extra) in VARIANTS.items()
    }


def page_types(path: Path, pagesize: int) -> set:
    data = path.read_bytes()
    return {data[at + 25] for at in range(pagesize, len(data), pagesize)}


def el8_tree(tmp_path: Path, packages: Path | bytes, os_release: str = RHEL8, at: str = "var/lib/rpm") -> Path:
    data = packages if isinstance(packages, bytes) else packages.read_bytes()
    return make_tree(tmp_path / "root", {"etc/os-release": os_release, f"{at}/Packages": data})


def codes(facts: dict) -> list:
    return [p["code"] for p in facts["problems"]]


# --------------------------------------------------------------------------- the reader


def test_fixtures_are_berkeley_db_hash_files_with_and_without_overflow_pages(bdb_rpmdbs):
    for name, path in bdb_rpmdbs.items():
        pagesize, order, _ = VARIANTS[name]
        meta = path.read_bytes()[:512]
        assert struct.unpack_from(f"{order}I", meta, 12)[0] == 0x061561, name
        assert struct.unpack_from(f"{order}I", meta, 20)[0] == pagesize, name
    assert 7 in page_types(bdb_rpmdbs["le-512"], 512)  # P_OVERFLOW: the off-page path is exercised
    assert 7 in page_types(bdb_rpmdbs["be-512"], 512)
    assert 7 not in page_types(bdb_rpmdbs["le-64k"], 65536)  # every header on its hash page


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_iter_values_yields_every_header_blob_and_skips_the_key_0_record(bdb_rpmdbs, rpm_blobs, variant):
    values = list(bdb_hash.iter_values(str(bdb_rpmdbs[variant])))
    assert sorted(values) == sorted(rpm_blobs.values())


def test_db_load_agrees_about_the_fixture(bdb_rpmdbs, rpm_blobs):
    dump = subprocess.run(
        [shutil.which("db_dump") or shutil.which("db5.3_dump") or "db_dump", "-p", str(bdb_rpmdbs["le-512"])],
        capture_output=True,
        check=True,
    )
    assert dump.stdout.count(b"\n ") == 2 * (len(rpm_blobs) + 1)


def test_on_page_items_and_duplicates(tmp_path):
    records = [(b"k%d" % i, b"v" * i) for i in range(1, 60)] + [(b"dup", b"one"), (b"dup", b"two")]
    path = db_load(tmp_path / "dups", records, 512, "<", duplicates=True)
    assert sorted(bdb_hash.iter_values(str(path))) == sorted(value for _, value in records)


def test_an_empty_database_has_no_values(tmp_path):
    assert list(bdb_hash.iter_values(str(db_load(tmp_path / "empty", [], 4096, "<")))) == []


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_read_rpm_bdb_agrees_with_the_sqlite_reader(bdb_rpmdbs, el8_rpmdb, variant):
    packages = gpu_detect.read_rpm_bdb(str(bdb_rpmdbs[variant]))
    assert packages == gpu_detect.read_rpm_sqlite(str(el8_rpmdb))
    docker = {"name": "docker-ce", "version": "3:24.0.7-1.el8", "arch": "x86_64", "source": "rpm"}
    assert packages["docker-ce"] == docker
    assert packages["containerd.io"]["version"] == "1.6.24-3.1.el8"
    assert set(packages) == {row[0] for row in EL8_RPMS}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than its metadata page"),
        (b"\0" * 4096, "no hash magic"),
        (b"garbage!" * 1000, "no hash magic"),
    ],
)
def test_not_a_hash_database_is_a_value_error(tmp_path, data, why):
    path = tmp_path / "Packages"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=why):
        list(bdb_hash.iter_values(str(path)))


def test_a_btree_database_is_refused(tmp_path):
    path = tmp_path / "btree"
    proc = subprocess.run(
        [_tool("db_load", "db5.3_load"), "-T", "-t", "btree", str(path)], input=b"k\nv\n", capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ValueError, match="no hash magic"):
        list(bdb_hash.iter_values(str(path)))


def test_a_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot open"):
        list(bdb_hash.iter_values(str(tmp_path / "absent")))


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_is_a_value_error_and_does_not_block(tmp_path, kind):
    path = tmp_path / "Packages"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        list(bdb_hash.iter_values(str(path)))


def test_a_cycle_in_an_overflow_chain_is_a_value_error(bdb_rpmdbs, tmp_path):
    data = bytearray(bdb_rpmdbs["le-512"].read_bytes())
    for at in range(512, len(data), 512):
        if data[at + 25] == 7 and struct.unpack_from("<I", data, at + 16)[0]:
            struct.pack_into("<I", data, at + 16, struct.unpack_from("<I", data, at + 8)[0])  # next = itself
            break
    else:
        pytest.fail("no chained overflow page in the fixture")
    path = tmp_path / "Packages"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="reached twice"):
        list(bdb_hash.iter_values(str(path)))


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("os_release", "at"),
    [(RHEL8, "var/lib/rpm"), (ROCKY8, "var/lib/rpm"), (RHEL8, "usr/lib/sysimage/rpm")],
    ids=["rhel-8.10", "rocky-8.9", "sysimage"],
)
@pytest.mark.parametrize("variant", ["le-512", "le-64k"])
def test_rhel8_tree_with_docker_ce_in_berkeley_db(tmp_path, bdb_rpmdbs, os_release, at, variant):
    facts = gpu_detect.detect(str(el8_tree(tmp_path, bdb_rpmdbs[variant], os_release, at)))
    assert facts["docker"]["flavour"] == "docker-ce"
    assert facts["docker"]["version"] == "24.0.7"
    assert facts["docker"]["package"] == {"name": "docker-ce", "version": "3:24.0.7-1.el8"}
    assert facts["container_toolkit"]["version"] == "1.14.3"
    assert facts["os"]["version_id"].startswith("8.")
    assert "package_db_unreadable" not in codes(facts)
    assert "detection_incomplete" not in codes(facts)


@pytest.mark.parametrize("cut", ["half", "meta-only", "garbage"])
def test_truncated_or_garbage_packages_file_is_a_warning(tmp_path, bdb_rpmdbs, cut):
    data = bdb_rpmdbs["le-512"].read_bytes()
    data = {"half": data[: len(data) // 2], "meta-only": data[:512], "garbage": os.urandom(8192)}[cut]
    facts = gpu_detect.detect(str(el8_tree(tmp_path, data)))
    problem = next(p for p in facts["problems"] if p["code"] == "package_db_unreadable")
    assert problem["refuses"] is False
    assert "/var/lib/rpm/Packages" in problem["message"]
    assert "detection_incomplete" not in codes(facts)
    assert facts["docker"]["flavour"] is None
    assert facts["supported"] is True


@pytest.fixture
def live_paths(tmp_path, monkeypatch):
    """Point the live host's package databases at tmp_path (Packages there, nothing else)."""
    monkeypatch.setattr(gpu_detect, "DPKG_STATUS", str(tmp_path / "absent-status"))
    monkeypatch.setattr(gpu_detect, "RPMDB_SQLITE", (str(tmp_path / "absent.sqlite"),))
    monkeypatch.setattr(gpu_detect, "RPMDB_OTHER", (str(tmp_path / "Packages"),))
    return tmp_path / "Packages"


def test_live_host_reads_berkeley_db_itself(live_paths, bdb_rpmdbs, monkeypatch):
    shutil.copy(bdb_rpmdbs["le-512"], live_paths)

    def no_rpm():
        raise AssertionError("rpm -qa must not run when the pure reader succeeds")

    monkeypatch.setattr(gpu_detect, "_rpm_query_live", no_rpm)
    packages, problems = gpu_detect.read_packages(gpu_detect.Host())
    assert packages["docker-ce"]["version"] == "3:24.0.7-1.el8"
    assert problems == []


def test_live_host_falls_back_to_rpm_when_the_reader_refuses(live_paths, monkeypatch):
    live_paths.write_bytes(b"\0" * 4096)
    docker = {"name": "docker-ce", "version": "3:24.0.7-1.el8", "arch": "x86_64", "source": "rpm"}
    monkeypatch.setattr(gpu_detect, "_rpm_query_live", lambda: {"docker-ce": docker})
    packages, problems = gpu_detect.read_packages(gpu_detect.Host())
    assert packages == {"docker-ce": docker}
    assert problems == []


def test_live_host_reports_both_failures(live_paths, monkeypatch):
    live_paths.write_bytes(b"\0" * 4096)

    def rpm_fails():
        raise FileNotFoundError(2, "No such file or directory", "rpm")

    monkeypatch.setattr(gpu_detect, "_rpm_query_live", rpm_fails)
    packages, problems = gpu_detect.read_packages(gpu_detect.Host())
    assert packages == {}
    assert [p["code"] for p in problems] == ["package_db_unreadable"]
    assert "no hash magic" in problems[0]["message"]
    assert "rpm -qa" in problems[0]["message"]


def test_ndb_under_root_is_still_unreadable(tmp_path):
    root = make_tree(tmp_path, {"etc/os-release": RHEL8, "usr/lib/sysimage/rpm/Packages.db": b"RpmP" + b"\0" * 60})
    assert "package_db_unreadable" in codes(gpu_detect.detect(str(root)))


# --------------------------------------------------------------------------- fuzzing: only ValueError comes out

_FUZZ_ROOT = tempfile.mkdtemp(prefix="bdb-fuzz-")
_FUZZ_DB = os.path.join(_FUZZ_ROOT, "var/lib/rpm/Packages")
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_value_error(data: bytes) -> None:
    """iter_values yields bytes or raises ValueError; read_packages never raises."""
    os.makedirs(os.path.dirname(_FUZZ_DB), exist_ok=True)
    with open(_FUZZ_DB, "wb") as f:
        f.write(data)
    try:
        for value in bdb_hash.iter_values(_FUZZ_DB):
            assert isinstance(value, bytes)
    except ValueError:
        pass
    _, problems = gpu_detect.read_packages(gpu_detect.Host(_FUZZ_ROOT))
    assert {p["code"] for p in problems} <= {"package_db_unreadable"}


@_FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_value_error(data):
    _only_value_error(data)


@_FUZZ
@given(st.binary(min_size=0, max_size=4096), st.sampled_from([512, 4096, 65536]), st.sampled_from("<>"))
def test_random_pages_behind_a_valid_metadata_page_only_raise_value_error(body, pagesize, order):
    meta = bytearray(512)
    struct.pack_into(f"{order}I", meta, 12, 0x061561)
    struct.pack_into(f"{order}II", meta, 16, 9, pagesize)
    npages = 1 + len(body) // pagesize + 1
    struct.pack_into(f"{order}I", meta, 32, npages - 1)
    struct.pack_into(f"{order}III", meta, 72, 0, 1, 0)
    struct.pack_into(f"{order}I", meta, 96, 1)
    page0 = bytes(meta) + b"\0" * (pagesize - 512)
    _only_value_error(page0 + body.ljust(len(body) + pagesize, b"\0"))


@pytest.fixture(scope="module")
def real_bdb(bdb_rpmdbs) -> dict:
    return {name: bdb_rpmdbs[name].read_bytes() for name in ("le-512", "be-512")}


@settings(_FUZZ, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_real_databases_only_raise_value_error(real_bdb, data):
    variant = data.draw(st.sampled_from(sorted(real_bdb)))
    blob = bytearray(real_bdb[variant])
    order = VARIANTS[variant][1]
    npages = len(blob) // 512
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 4))
        how = data.draw(st.sampled_from(["byte", "page-number", "length"]))
        if how == "byte":
            blob[at] = data.draw(st.integers(0, 255))
        elif how == "page-number":  # plausible page numbers make cycles and cross-links likely
            struct.pack_into(f"{order}I", blob, at, data.draw(st.integers(0, npages + 2)))
        else:
            struct.pack_into(f"{order}H", blob, at, data.draw(st.integers(0, 600)))
    blob = blob[: data.draw(st.integers(0, len(blob)))] if data.draw(st.booleans()) else blob
    _only_value_error(bytes(blob))

"""Fuzzing (hypothesis) of every parser of hostile input: a result or the parser's documented error, never a crash.

os-release, dpkg status (as bytes and text), rpm header blobs, ELF headers and a whole host tree are fuzzed in
test_detect_robustness.py, daemon.json's merge in test_daemon_json_properties.py; this file adds the rest:
structured dpkg stanzas, rpm query output and databases, daemon.json text, the settings file, and the inputs
a CDI spec is made from (/proc/driver/nvidia/gpus/*/information, nvidia-smi -q, ld.so.cache).
Examples are bounded and deadlines off, so the file runs in seconds on two cores.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
from pathlib import Path

import pytest
from conftest import module_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_install import settings as gi_settings
from gpu_install.errors import GpuInstallError, codes

gpu_detect = module_utils("gpu_detect")
cdi = module_utils("cdi")
dj = module_utils("daemon_json")

CDI_CORPUS = Path(__file__).resolve().parent / "cdi_corpus"
sys.path.insert(0, str(CDI_CORPUS))
import tree  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that looks like the real thing often enough to reach the deep branches: field names, separators,
# digits of every script (int("²") raises), long lines, NUL, CR.
WORDS = st.sampled_from(
    [
        "Package",
        "Status",
        "Version",
        "Architecture",
        "install ok installed",
        "deinstall ok config-files",
        "Model",
        "GPU UUID",
        "Bus Location",
        "Device Minor",
        "Minor Number",
        "Product Name",
        "GPU ",
        "0000:00:06.0",
        "00000000:3B:00.0",
        "GPU-d797d853-7e5b-0993-a5ec-b02ca97045ca",
        ":",
        " : ",
        "\n",
        "\r\n",
        "\t",
        " ",
        "\x00",
        "²",
        "٣",
        "12",
        "-1",
        "99999999999999999999",
        "Ｆ",
        "ID=debian",
        'VERSION_ID="12"',
        "'",
        '"',
        "\\",
        "=",
    ]
)
LOOKALIKE = st.lists(WORDS | st.text(max_size=12), max_size=60).map("".join)


# --- dpkg status, os-release: structured text ------------------------------------------------------------
@FAST
@given(LOOKALIKE)
def test_dpkg_status_lookalikes_give_packages(text):
    packages = gpu_detect.parse_dpkg_status(text)
    json.dumps(packages, default=str)


def _dpkg_status_line_by_line(text):
    """parse_dpkg_status's meaning, one line at a time: what its regex must find, and nothing else."""
    packages, stanza = {}, {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            name, status = stanza.get("Package", "").strip(), stanza.get("Status", "").split()
            if name and len(status) == 3 and status[2] == "installed":
                version, arch = stanza.get("Version", "").strip(), stanza.get("Architecture", "").strip()
                packages[name] = {"name": name, "version": version or None, "arch": arch or None, "source": "deb"}
            stanza = {}
        elif line[0] not in " \t" and ":" in line:
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    return packages


# Lines of the fields parse_dpkg_status reads (and lookalikes), each ended by one of the line breaks
# str.splitlines() knows, a blank line or white space that is no line break.
DPKG_LINES = st.lists(
    st.tuples(
        st.sampled_from(
            ["Package: a", "Package: b", "Status: install ok installed", "Status: deinstall ok config-files"]
            + ["Version: 1.0", "Architecture: amd64", "Packages: c", " Package: d", "\tStatus: x y installed", ""]
        ),
        st.sampled_from(
            ["\n", "\n\n", "\n \n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"]
            + ["\u2029", "\n\x1f\n", "\n\xa0\n", "\n\u3000\n", "\n\t\n", " ", "\x1f"]
        ),
    ),
    max_size=30,
).map(lambda lines: "".join(field + end for field, end in lines))


@FAST
@given(DPKG_LINES)
def test_dpkg_status_reads_the_lines_str_splitlines_sees(text):
    assert gpu_detect.parse_dpkg_status(text) == _dpkg_status_line_by_line(text)


BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("blank", ["", " ", "\t", "\x1f", "\xa0", "\u3000"])
@pytest.mark.parametrize("brk", BREAKS)
def test_dpkg_status_lines_end_at_every_line_break_and_stanzas_at_every_blank_line(brk, blank):
    installed = "Status: install ok installed"
    lines = ["Package: a", installed, "Version: 1", blank, "Package: b", installed]
    packages = gpu_detect.parse_dpkg_status(brk.join(lines))
    assert packages == _dpkg_status_line_by_line(brk.join(lines))
    assert sorted(packages) == ["a", "b"] and packages["a"]["version"] == "1" and packages["b"]["version"] is None


@FAST
@given(LOOKALIKE)
def test_os_release_lookalikes_give_strings(text):
    parsed = gpu_detect.parse_os_release(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())


# --- rpm ---------------------------------------------------------------------------------------------------
@FAST
@given(st.lists(st.lists(LOOKALIKE, max_size=6).map("\t".join), max_size=20).map("\n".join))
def test_rpm_query_output_gives_packages(text):
    packages = gpu_detect.parse_rpm_query(text)
    json.dumps(packages, default=str)


@FEW
@given(st.binary(max_size=2048))
def test_random_bytes_as_an_rpm_sqlite_database_raise_only_value_or_sqlite_errors(tmp_path, data):
    path = tmp_path / "rpmdb.sqlite"
    path.write_bytes(data)
    try:
        gpu_detect.read_rpm_sqlite(str(path))
    except (ValueError, sqlite3.Error):
        pass


@FEW
@given(st.lists(st.binary(max_size=256), max_size=8))
def test_random_header_blobs_in_a_real_rpm_sqlite_database_give_packages_or_value_error(tmp_path, blobs):
    path = tmp_path / "rpmdb.sqlite"
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
        conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
    conn.close()
    try:
        packages = gpu_detect.read_rpm_sqlite(str(path))
    except ValueError:
        return
    json.dumps(packages, default=str)


@FEW
@given(st.binary(max_size=4096))
def test_random_bytes_as_an_rpm_berkeley_db_raise_only_value_error(tmp_path, data):
    path = tmp_path / "Packages"
    path.write_bytes(data)
    try:
        gpu_detect.read_rpm_bdb(str(path))
    except ValueError:
        pass


# --- daemon.json ---------------------------------------------------------------------------------------------
JSONISH = st.lists(
    st.sampled_from(['{', '}', '[', ']', '"', ":", ",", "1", "1e999", "-0", "²", "٣", "true", "null", "NaN",
                     "\\u0000", "\\ud800", "\x00", "\ufeff", " ", "\n", "runtimes", "default-runtime"])
    | st.text(max_size=6),
    max_size=80,
).map("".join)  # fmt: skip


@FAST
@given(JSONISH)
def test_daemon_json_lookalikes_parse_or_give_exit_4(text):
    try:
        doc = dj.parse(text.encode("utf-8", "surrogatepass"))
    except dj.DaemonJsonError as exc:
        assert exc.code == codes.INVALID_INPUT
        return
    assert isinstance(doc, dict)
    dj.dumps(doc)


@pytest.mark.parametrize("text", ['{"a": 1²}', '{"a": ٣}', '{"a": 1e99999}', '{"a": -}', '{"a": 0x10}'])
def test_daemon_json_numbers_in_other_scripts_are_exit_4_or_kept_verbatim(text):
    try:
        doc = dj.parse(text.encode())
    except dj.DaemonJsonError as exc:
        assert exc.code == codes.INVALID_INPUT
        return
    assert json.loads(dj.dumps(doc)) == json.loads(text)


# --- the settings file -----------------------------------------------------------------------------------------
YAMLISH = st.lists(
    st.sampled_from(["nvidia_driver_branch", "gpu_install_proxy", "gpu_install_repositories", "cuda", "url",
                     "gpu_install_lock_timeout", "nvidia_container_driver_capabilities", ": ", ":", "\n", "  ",
                     "- ", "[", "]", "{", "}", "&a ", "*a", "!!python/object:os.system", "!!binary ", "!!float ",
                     "'", '"', "\\0", "\\x00", "{{", "%", "@", "`", "|", ">", "#", "---", "...", "1e400", ".nan",
                     "~", "yes", "550", "http://p:3128"])
    | st.text(max_size=8),
    max_size=50,
).map("".join)  # fmt: skip


def _load(tmp_path: Path, data: bytes):
    path = tmp_path / "config.yml"
    path.write_bytes(data)
    try:
        values, _ = gi_settings.load(str(path))
    except GpuInstallError as exc:
        assert exc.code == codes.INVALID_INPUT, exc.reason
        assert "Traceback" not in exc.reason and len(exc.reason) < 4000
        return None
    assert isinstance(values, dict)
    json.dumps(values)  # what the engine hands to Ansible
    return values


@FAST
@given(YAMLISH)
def test_settings_file_lookalikes_load_or_give_exit_4(tmp_path, text):
    _load(tmp_path, text.encode("utf-8", "surrogatepass"))


@FEW
@given(st.binary(max_size=512))
def test_random_bytes_as_the_settings_file_load_or_give_exit_4(tmp_path, data):
    _load(tmp_path, data)


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@FAST
@given(st.dictionaries(st.sampled_from(sorted(gi_settings.schema())), VALUES, max_size=4))
def test_any_value_for_any_setting_loads_or_names_the_setting_with_exit_4(tmp_path, doc):
    import yaml

    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        values, _ = gi_settings.load(str(path))
    except GpuInstallError as exc:
        assert exc.code == codes.INVALID_INPUT
        assert any(name in exc.reason for name in doc), exc.reason
        return
    assert set(values) == set(doc)
    json.dumps(values)


@pytest.mark.parametrize(
    "doc",
    [
        {"containerd_ready_timeout": [9223372036854775808, None]},
        {"docker_ready_timeout": 1 << 70},
        {"gpu_install_repositories": {"cuda": {"url": -(1 << 64)}}},
    ],
)
def test_a_number_beyond_64_bits_in_any_setting_is_exit_4_naming_it(tmp_path, doc):
    import yaml

    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(GpuInstallError) as caught:
        gi_settings.load(str(path))
    assert caught.value.code == codes.INVALID_INPUT
    assert next(iter(doc)) in caught.value.reason and "beyond" in caught.value.reason


# --- CDI inputs: /proc/driver/nvidia/gpus/*/information, nvidia-smi -q, ld.so.cache -----------------------------
@FAST
@given(LOOKALIKE)
def test_nvidia_smi_q_lookalikes_give_gpu_tuples(text):
    for address, uuid, minor, name in cdi.parse_nvidia_smi_q(text):
        assert isinstance(address, str)
        assert minor is None or (isinstance(minor, int) and minor >= 0)
        assert uuid is None or isinstance(uuid, str)
        assert name is None or isinstance(name, str)


@FAST
@given(LOOKALIKE, st.sampled_from(["0000:00:06.0", "garbage", "0000:zz:00.0"]))
def test_proc_information_lookalikes_give_gpus(tmp_path, text, entry):
    info = tmp_path / "proc/driver/nvidia/gpus" / entry / "information"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(text, errors="surrogatepass")
    gpus = gpu_detect._nvidia_proc_gpus(gpu_detect.Host(str(tmp_path)))
    for gpu in gpus.values():
        assert gpu["minor"] is None or (isinstance(gpu["minor"], int) and gpu["minor"] >= 0)
    json.dumps(gpus)


def _new_cache(entries: list[tuple[int, int, int]], strings: bytes) -> bytes:
    header = cdi.NEW_MAGIC + struct.pack("<II", len(entries), len(strings)) + b"\0" * 20
    body = b"".join(struct.pack("<iIIIQ", f, k, v, 0, 0) for f, k, v in entries)
    return header + body + strings


@FAST
@given(
    st.binary(max_size=64),
    st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
             max_size=6),
    st.binary(max_size=128),
    st.booleans(),
)  # fmt: skip
def test_ld_so_cache_bytes_give_entries_never_an_exception(prefix, entries, strings, truncate):
    data = _new_cache(entries, strings)
    for blob in (prefix + data, data[: len(data) // 2] if truncate else data, cdi.OLD_MAGIC + prefix, prefix):
        for soname, flags, path in cdi.parse_ld_so_cache(blob):
            assert isinstance(soname, str) and isinstance(path, str) and isinstance(flags, int)


@pytest.fixture
def h100_tree(tmp_path):
    return tree.build(CDI_CORPUS / "h100", tmp_path / "h100")


@FEW
@given(LOOKALIKE, st.binary(max_size=512))
def test_a_cdi_spec_from_hostile_gpu_information_and_linker_cache_is_valid_or_a_cdi_error(h100_tree, info, cache):
    (h100_tree / "proc/driver/nvidia/gpus/0000:00:06.0/information").write_text(info, errors="surrogatepass")
    (h100_tree / "etc/ld.so.cache").write_bytes(cache)
    try:
        spec, _found = cdi.generate(
            root=str(h100_tree), search_paths=["/usr/local/nvidia/lib64", "/usr/local/nvidia/bin"]
        )
    except cdi.CdiError as exc:
        assert exc.code in codes.EXIT_CODES and exc.code != codes.INTERNAL, exc.reason
        return
    assert cdi.validate(spec) == []
    json.loads(cdi.dumps(spec))

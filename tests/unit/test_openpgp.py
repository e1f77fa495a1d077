"""openpgp (stdlib): fingerprints against gpg's own, armour, packet framing, and only ValueError on bad input."""

from __future__ import annotations

import base64
import shutil
import sys
from pathlib import Path

import pytest
from conftest import module_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.mirror import Gpg  # noqa: E402

openpgp = module_utils("openpgp")


@pytest.fixture(autouse=True)
def _gpg_present():
    if shutil.which("gpg") is None:
        pytest.fail("gpg is not installed (apt-get install gnupg): scripts/test installs it")


@pytest.fixture(scope="module")
def gpg():
    g = Gpg()
    try:
        yield g
    finally:
        g.close()


@pytest.fixture(scope="module")
def keys(gpg):
    """Two keys made by gpg: an ed25519 and an RSA one (fingerprint as gpg --with-colons prints it)."""
    return [gpg.new_key("Ed Key", "ed25519"), gpg.new_key("Rsa Key", "rsa2048")]


def to_old_format(raw: bytes) -> bytes:
    """Re-frame every packet with old-format headers (4-byte lengths)."""
    out = b""
    for tag, body in openpgp.packets(raw):
        out += bytes([0x80 | (tag << 2) | 2]) + len(body).to_bytes(4, "big") + body
    return out


def test_fingerprint_matches_gpg_for_armoured_and_binary_keys(gpg, keys):
    for key in keys:
        binary = gpg.run("--export", key.fingerprint)
        assert openpgp.fingerprints(key.public) == [key.fingerprint]
        assert openpgp.fingerprints(binary) == [key.fingerprint]


def test_dearmor_gives_gpgs_binary_export(gpg, keys):
    for key in keys:
        assert openpgp.dearmor(key.public) == gpg.run("--export", key.fingerprint)


def test_old_format_packet_headers_give_the_same_fingerprint(keys):
    raw = openpgp.dearmor(keys[1].public)
    assert openpgp.fingerprints(to_old_format(raw)) == [keys[1].fingerprint]


def test_armor_round_trips_with_a_crc_line(keys):
    raw = openpgp.dearmor(keys[0].public)
    text = openpgp.armor(raw)
    assert text.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    assert openpgp.dearmor(text) == raw


def test_armour_headers_and_crlf_are_accepted(keys):
    text = keys[0].public.decode().replace("\n", "\r\n")
    text = text.replace("-----\r\n", "-----\r\nComment: a comment\r\nVersion: x\r\n", 1)
    assert openpgp.fingerprints(text.encode()) == [keys[0].fingerprint]


def test_a_damaged_armour_fails_the_crc24_check(keys):
    raw = openpgp.dearmor(keys[0].public)
    text = openpgp.armor(raw).decode()
    crc_line = next(line for line in text.splitlines() if line.startswith("="))
    wrong = base64.b64encode(((openpgp.crc24(raw) + 1) & 0xFFFFFF).to_bytes(3, "big")).decode()
    with pytest.raises(ValueError, match="CRC24"):
        openpgp.dearmor(text.replace(crc_line, "=" + wrong).encode())


def test_a_keyring_with_two_keys_lists_both_and_select_keeps_one(gpg, keys):
    both = gpg.run("--export", keys[0].fingerprint, keys[1].fingerprint)
    assert sorted(openpgp.fingerprints(both)) == sorted(k.fingerprint for k in keys)
    only = openpgp.select(both, keys[1].fingerprint)
    assert openpgp.fingerprints(only) == [keys[1].fingerprint]
    assert only == gpg.run("--export", keys[1].fingerprint)
    with pytest.raises(ValueError, match="no primary key"):
        openpgp.select(only, keys[0].fingerprint)


@pytest.mark.parametrize("version", [5, 6])
def test_v5_and_v6_keys_are_reported_as_unsupported(version):
    body = bytes([version]) + b"\x00" * 4 + bytes([27]) + b"\x00\x00\x00\x20" + b"\x11" * 32
    packet = bytes([0xC0 | 6, len(body)]) + body
    with pytest.raises(openpgp.UnsupportedKey, match=f"v{version} keys are not supported"):
        openpgp.fingerprints(packet)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"hello", "armour"),
        (b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n", "base64"),
        (b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n", "public key block"),
        (bytes([0xC0 | 5, 1, 4]), "secret key"),
        (bytes([0xC0 | 13, 1, 0x41]), "does not start with a public key"),
        (bytes([0xC0 | 6, 10, 4]), "longer than the data"),
        (bytes([0xC6]), "cut short"),
    ],
)
def test_malformed_keys_raise_value_error_naming_the_problem(data, match):
    with pytest.raises(ValueError, match=match):
        openpgp.fingerprints(data)


def test_normalize_fingerprint_accepts_spaces_and_0x():
    spaced = "eb69 3b30 35cd 5710 e231  e123 a4b4 6996 3bf8 63cc"
    assert openpgp.normalize_fingerprint(spaced) == "EB693B3035CD5710E231E123A4B469963BF863CC"
    assert openpgp.normalize_fingerprint("0x" + "a" * 40) == "A" * 40
    with pytest.raises(ValueError, match="40 hexadecimal"):
        openpgp.normalize_fingerprint("3BF863CC")


def _only_value_errors(data: bytes) -> None:
    for call in (openpgp.fingerprints, openpgp.dearmor):
        try:
            call(data)
        except ValueError:
            pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_value_error(data):
    _only_value_errors(data)
    _only_value_errors(bytes([0x99]) + data)  # an old-format public-key header, then noise
    _only_value_errors(bytes([0xC6]) + data)  # a new-format one
    _only_value_errors(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + base64.b64encode(data) + b"\n-----END PGP")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_real_keys_raise_only_value_error(keys, data):
    raw = bytearray(openpgp.dearmor(keys[1].public))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=4))
    for pos, value in flips:
        raw[pos] = value
    _only_value_errors(bytes(raw[:cut]))
    _only_value_errors(openpgp.armor(bytes(raw)))

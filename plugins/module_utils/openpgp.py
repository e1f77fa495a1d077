# Copyright: gpu-install contributors
# Apache License 2.0
"""OpenPGP public keys with the stdlib only: armour, packets, v4 fingerprints.

Enough of RFC 4880 (and RFC 9580's packet framing) to pin a repository key
before anything trusts it:

* ``dearmor(data)``: ASCII armour (CRC24 checked when present) or binary in,
  the binary key packets out (what apt's ``Signed-By`` keyring file holds);
* ``fingerprints(data)``: the primary keys' v4 fingerprints, upper-case hex;
* ``armor(data)``: binary packets in, an armoured public key block out.

Malformed input of any kind raises ``ValueError`` (``UnsupportedKey``, a
subclass, for keys that are well formed but not version 4); nothing else.
Signatures are never checked here: apt's gpgv and rpm/dnf do that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Iterator, List, Tuple

ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"

TAG_SIGNATURE = 2
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14

_CRC24_INIT = 0xB704CE
_CRC24_POLY = 0x1864CFB
_ARMOR_RE = re.compile(
    r"-----BEGIN PGP (?P<kind>[A-Z ,0-9/]+)-----(?P<body>.*?)-----END PGP (?P=kind)-----",
    re.DOTALL,
)


class UnsupportedKey(ValueError):
    """A well-formed key of a version this code cannot fingerprint (v3, v5, v6)."""


def crc24(data: bytes) -> int:
    crc = _CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
    return crc & 0xFFFFFF


def is_armored(data: bytes) -> bool:
    return b"-----BEGIN PGP " in data[:4096] or data.lstrip()[:5] == b"-----"


def _unarmor_block(kind: str, body: str) -> bytes:
    if kind != "PUBLIC KEY BLOCK":
        raise ValueError(f"expected an OpenPGP public key block, found a {kind.lower()}")
    lines = body.replace("\r", "").split("\n")
    # Armour headers ("Version: ...", "Comment: ...") run up to the first blank line.
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i < len(lines) and ":" in lines[i]:
        while i < len(lines) and lines[i].strip():
            i += 1
    lines = [line.strip() for line in lines[i:] if line.strip()]
    checksum = None
    if lines and lines[-1].startswith("=") and len(lines[-1]) == 5:
        checksum = lines.pop()[1:]
    text = "".join(lines)
    if not text:
        raise ValueError("the armoured key block is empty")
    if not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", text):
        raise ValueError("the armoured key block holds characters that are not base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the armoured key block is not valid base64 ({exc})") from None
    if checksum is not None:
        try:
            want = int.from_bytes(base64.b64decode(checksum, validate=True), "big")
        except (binascii.Error, ValueError):
            raise ValueError("the armour checksum line is not valid base64") from None
        if crc24(raw) != want:
            raise ValueError("the armour checksum (CRC24) does not match: the key was damaged in transit")
    return raw


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets of a public key, from armoured or binary input (validated)."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("key data must be bytes")
    data = bytes(data)
    if not data:
        raise ValueError("the key is empty")
    if data[0] & 0x80:
        raw = data
    else:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("the key is neither binary OpenPGP nor ASCII armour") from None
        blocks = list(_ARMOR_RE.finditer(text))
        if not blocks:
            raise ValueError("no '-----BEGIN PGP PUBLIC KEY BLOCK-----' armour was found")
        raw = b"".join(_unarmor_block(m.group("kind"), m.group("body")) for m in blocks)
    _primary_keys(raw)  # validates the packet stream
    return raw


def armor(raw: bytes) -> bytes:
    """ASCII armour of binary key packets (with the CRC24 line)."""
    body = base64.b64encode(raw).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    crc = base64.b64encode(crc24(raw).to_bytes(3, "big")).decode("ascii")
    return ("\n".join([ARMOR_BEGIN, "", *lines, "=" + crc, ARMOR_END]) + "\n").encode("ascii")


def packets(raw: bytes) -> Iterator[Tuple[int, bytes]]:
    """(tag, body) of each packet; old- and new-format headers."""
    for tag, _start, body_start, body_end in _framing(raw):
        yield tag, raw[body_start:body_end]


def _framing(raw: bytes) -> Iterator[Tuple[int, int, int, int]]:
    """(tag, header start, body start, body end) of each packet."""
    pos, end = 0, len(raw)
    while pos < end:
        start = pos
        head = raw[pos]
        pos += 1
        if not head & 0x80:
            raise ValueError(f"byte {pos - 1} is not an OpenPGP packet header")
        if head & 0x40:  # new format
            tag = head & 0x3F
            if pos >= end:
                raise ValueError("a packet header is cut short")
            first = raw[pos]
            if first < 192:
                length, pos = first, pos + 1
            elif first < 224:
                if pos + 1 >= end:
                    raise ValueError("a packet header is cut short")
                length, pos = ((first - 192) << 8) + raw[pos + 1] + 192, pos + 2
            elif first == 255:
                if pos + 5 > end:
                    raise ValueError("a packet header is cut short")
                length, pos = int.from_bytes(raw[pos + 1 : pos + 5], "big"), pos + 5
            else:
                raise ValueError("partial body lengths are not allowed in a public key")
        else:  # old format
            tag = (head >> 2) & 0x0F
            kind = head & 0x03
            if kind == 3:
                length = end - pos
            else:
                size = (1, 2, 4)[kind]
                if pos + size > end:
                    raise ValueError("a packet header is cut short")
                length, pos = int.from_bytes(raw[pos : pos + size], "big"), pos + size
        if tag == 0:
            raise ValueError("packet tag 0 is reserved")
        if pos + length > end:
            raise ValueError("a packet is longer than the data")
        yield tag, start, pos, pos + length
        pos += length


def _primary_keys(raw: bytes) -> List[bytes]:
    keys: List[bytes] = []
    seen_first = False
    for tag, body in packets(raw):
        if not seen_first:
            if tag == TAG_SECRET_KEY:
                raise ValueError("this is a secret key: give the public key")
            if tag != TAG_PUBLIC_KEY:
                raise ValueError(f"the data does not start with a public key packet (tag {tag})")
            seen_first = True
        if tag == TAG_SECRET_KEY:
            raise ValueError("the key data holds a secret key")
        if tag == TAG_PUBLIC_KEY:
            keys.append(body)
    if not keys:
        raise ValueError("no OpenPGP public key was found")
    return keys


def fingerprint_of(body: bytes) -> str:
    """The fingerprint of one public-key packet body (upper-case hex)."""
    if not body:
        raise ValueError("a public key packet is empty")
    version = body[0]
    if version in (5, 6):
        raise UnsupportedKey(
            f"OpenPGP v{version} keys are not supported (only v4 fingerprints can be pinned): "
            "ask the repository's publisher for a v4 key"
        )
    if version in (2, 3):
        raise UnsupportedKey(f"OpenPGP v{version} keys are obsolete and not supported")
    if version != 4:
        raise ValueError(f"unknown OpenPGP key version {version}")
    if len(body) < 6:
        raise ValueError("a v4 public key packet is cut short")
    if len(body) > 0xFFFF:
        raise ValueError("a v4 public key packet is too long")
    digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body)  # noqa: S324 (v4 is defined as SHA-1)
    return digest.hexdigest().upper()


def fingerprints(data: bytes) -> List[str]:
    """The v4 fingerprints of the primary keys in ``data`` (armoured or binary)."""
    return [fingerprint_of(body) for body in _primary_keys(dearmor(data))]


def normalize_fingerprint(text: str) -> str:
    """``"EB69 3B30 ..."`` or ``"0xeb693b..."`` -> ``"EB693B..."``; ValueError if it is not 40 hex digits."""
    if not isinstance(text, str):
        raise ValueError("a fingerprint must be a string")
    fpr = re.sub(r"\s+", "", text).upper()
    if fpr.startswith("0X"):
        fpr = fpr[2:]
    if not re.fullmatch(r"[0-9A-F]{40}", fpr):
        shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
        raise ValueError(f"{shown} is not a v4 fingerprint (40 hexadecimal digits)")
    return fpr


def select(data: bytes, fingerprint: str) -> bytes:
    """Only the packets of the primary key ``fingerprint`` (its user ids, subkeys, signatures).

    A served key file may hold more keys than the one pinned; the keyring gpu-install writes
    holds the pinned one alone, so apt and rpm trust nothing else for that repository.
    """
    want = normalize_fingerprint(fingerprint)
    raw = dearmor(data)
    out: List[bytes] = []
    keep = False
    for tag, start, body_start, body_end in _framing(raw):
        if tag == TAG_PUBLIC_KEY:
            keep = fingerprint_of(raw[body_start:body_end]) == want
        if keep:
            out.append(raw[start:body_end])
    if not out:
        raise ValueError(f"the key data holds no primary key with fingerprint {want}")
    return b"".join(out)

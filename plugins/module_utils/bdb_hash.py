# Copyright: gpu-install contributors
# Apache License 2.0
"""A read-only reader of Berkeley DB *hash* databases (stdlib only).

Enough of the format for rpm's ``Packages`` file (RHEL 8 and its rebuilds
keep the rpm database in Berkeley DB): ``iter_values(path)`` yields the value
of every record, bucket by bucket.  Anything that is not a hash database, or
is corrupt, raises ``ValueError`` and nothing else; every walk is bounded by
the file's page count and no page is read twice, so a crafted file cannot
loop.

The layout (Berkeley DB 4.x/5.x, hash versions 8 to 10):

* Page 0, the metadata page: magic 0x061561 at byte 12 (its byte order is the
  database's), version at 16, page size at 20, encryption algorithm at 24,
  meta flags at 26, last page number at 32, maximum bucket at 72, and the 32
  ``spares`` from 96: bucket ``b`` lives on page ``b + spares[bits(b)]``.
* Every other page starts with a 26-byte header (page number at 8, previous
  and next page at 12 and 16, entry count at 20, high free offset at 22, type
  at 25), 32 bytes where the database keeps page checksums.
* Hash pages (type 13, or 2 before Berkeley DB 4.6; a bucket page never
  written is all zeros and empty) hold an index of 16-bit
  item offsets after the header, key and data alternating; items sit at the
  end of the page, in index order from the end down, so an item ends where
  the previous one starts.  A bucket's pages chain through "next page".
* An item's first byte is its type: 1 (key/data: the bytes follow), 3
  (off-page: page number at +4 and total length at +8 of a chain of overflow
  pages, type 7, each holding "high free offset" bytes after its header),
  2 (on-page duplicates: repeated length, bytes, length) or 4 (off-page
  duplicates, a separate tree: skipped, rpm never writes them).
"""

from __future__ import annotations

import os
import stat
import struct

TYPE_CHECKING = False  # typing for the type checker only (gpu_detect imports this module at every start)
if TYPE_CHECKING:
    from typing import Iterator, List, Set, Tuple

HASH_MAGIC = 0x061561
HASH_VERSIONS = (8, 9, 10)
META_SIZE = 512
PAGE_HEADER = 26
PAGE_HEADER_CHKSUM = 32
META_CHKSUM = 0x01  # DBMETA_CHKSUM: pages carry a checksum after the header
META_PARTITIONED = 0x06  # DBMETA_PART_RANGE | DBMETA_PART_CALLBACK

P_HASH_UNSORTED = 2
P_OVERFLOW = 7
P_HASH = 13
HASH_PAGE_TYPES = (P_HASH_UNSORTED, P_HASH)

H_KEYDATA = 1
H_DUPLICATE = 2
H_OFFPAGE = 3
H_OFFDUP = 4

_BOOKKEEPING_KEY = b"\0\0\0\0"  # rpm's key-0 record: the last header instance number


class _Db:
    """An open hash database: its pages read on demand."""

    def __init__(self, fd: int, size: int, meta: bytes) -> None:
        self.fd = fd
        if len(meta) < META_SIZE:
            raise ValueError("not a Berkeley DB hash database (shorter than its metadata page)")
        if struct.unpack_from("<I", meta, 12)[0] == HASH_MAGIC:
            self.order = "<"
        elif struct.unpack_from(">I", meta, 12)[0] == HASH_MAGIC:
            self.order = ">"
        else:
            raise ValueError("not a Berkeley DB hash database (no hash magic)")
        version, pagesize = self.u32s(meta, 16, 2)
        if version not in HASH_VERSIONS:
            raise ValueError(f"unsupported Berkeley DB hash version {version}")
        if pagesize < META_SIZE or pagesize > 65536 or pagesize & (pagesize - 1):
            raise ValueError(f"bad Berkeley DB page size {pagesize}")
        if meta[24]:
            raise ValueError("encrypted Berkeley DB database")
        if meta[26] & META_PARTITIONED:
            raise ValueError("partitioned Berkeley DB database")
        self.pagesize = pagesize
        self.overhead = PAGE_HEADER_CHKSUM if meta[26] & META_CHKSUM else PAGE_HEADER
        (last_pgno,) = self.u32s(meta, 32, 1)
        self.npages = min(size // pagesize, last_pgno + 1)
        (self.max_bucket,) = self.u32s(meta, 72, 1)
        if self.max_bucket >= min(self.npages, 1 << 31):
            raise ValueError(f"maximum bucket {self.max_bucket} beyond the {self.npages} pages")
        self.spares = self.u32s(meta, 96, 32)
        self.seen: Set[int] = set()

    def u32s(self, buf: bytes, offset: int, count: int) -> Tuple[int, ...]:
        return struct.unpack_from(f"{self.order}{count}I", buf, offset)

    def u16(self, buf: bytes, offset: int) -> int:
        return int(struct.unpack_from(f"{self.order}H", buf, offset)[0])

    def page(self, pgno: int, types: Tuple[int, ...]) -> bytes:
        """Page ``pgno``, once: a page asked for twice means a cycle or a shared page.

        A bucket page that was allocated but never written (all zero header) reads as an empty
        hash page, as Berkeley DB itself reads it.
        """
        if not 0 < pgno < self.npages:
            raise ValueError(f"page {pgno} outside the database (1..{self.npages - 1})")
        if pgno in self.seen:
            raise ValueError(f"page {pgno} reached twice")
        self.seen.add(pgno)
        try:
            page = os.pread(self.fd, self.pagesize, pgno * self.pagesize)
        except OSError as exc:
            raise ValueError(f"cannot read page {pgno}: {exc.strerror or exc}") from None
        if len(page) != self.pagesize:
            raise ValueError(f"page {pgno} is truncated")
        if P_HASH in types and not any(page[8:PAGE_HEADER]):
            return page  # no entries, no next page
        if self.u32s(page, 8, 1)[0] != pgno:
            raise ValueError(f"page {pgno} claims another page number")
        if page[25] not in types:
            raise ValueError(f"page {pgno} has type {page[25]}, expected one of {types}")
        return page

    def bucket_page(self, bucket: int) -> int:
        return bucket + self.spares[bucket.bit_length()]

    def overflow(self, pgno: int, total: int) -> bytes:
        """The ``total`` bytes of an off-page item, from its overflow chain."""
        if total <= 0 or total > self.npages * self.pagesize:
            raise ValueError(f"off-page item of impossible length {total}")
        chunks: List[bytes] = []
        left = total
        while left > 0:
            if pgno == 0:
                raise ValueError("overflow chain ends early")
            page = self.page(pgno, (P_OVERFLOW,))
            length = self.u16(page, 22)
            if length == 0 or length > left or self.overhead + length > self.pagesize:
                raise ValueError(f"overflow page {pgno} holds a bad length {length}")
            chunks.append(page[self.overhead : self.overhead + length])
            left -= length
            (pgno,) = self.u32s(page, 16, 1)
        return b"".join(chunks)

    def item(self, page: bytes, offset: int, length: int) -> List[bytes]:
        """The value(s) of one item: one, or several for on-page duplicates, none for off-page ones."""
        kind = page[offset]
        if kind == H_KEYDATA:
            return [page[offset + 1 : offset + length]]
        if kind == H_OFFPAGE:
            if length != 12:
                raise ValueError("off-page item of the wrong size")
            pgno, total = self.u32s(page, offset + 4, 2)
            return [self.overflow(pgno, total)]
        if kind == H_DUPLICATE:
            values = []
            at, end = offset + 1, offset + length
            while at < end:
                if at + 2 > end:
                    raise ValueError("truncated duplicate set")
                size = self.u16(page, at)
                if at + 4 + size > end or self.u16(page, at + 2 + size) != size:
                    raise ValueError("corrupt duplicate set")
                values.append(page[at + 2 : at + 2 + size])
                at += 4 + size
            return values
        if kind == H_OFFDUP:
            return []  # a separate duplicate tree: never written by rpm
        raise ValueError(f"unknown hash item type {kind}")

    def records(self, page: bytes) -> Iterator[Tuple[bytes, List[bytes]]]:
        """(key, values) of each key/data pair of one hash page."""
        entries = self.u16(page, 20)
        index_end = self.overhead + 2 * entries
        if entries % 2 or index_end > self.pagesize:
            raise ValueError(f"hash page with a bad entry count {entries}")
        end = self.pagesize
        for i in range(0, entries, 2):
            koff = self.u16(page, self.overhead + 2 * i)
            voff = self.u16(page, self.overhead + 2 * i + 2)
            if not index_end <= voff < koff < end:
                raise ValueError("hash page with overlapping items")
            keys = self.item(page, koff, end - koff)
            if len(keys) != 1:
                raise ValueError("hash page with a duplicate set as a key")
            yield keys[0], self.item(page, voff, koff - voff)
            end = voff


def iter_values(path: str) -> Iterator[bytes]:
    """Yield the value of each record of the Berkeley DB hash database ``path``.

    rpm's bookkeeping record (key 0) is skipped.  Raises ``ValueError`` when
    the file cannot be read, is not a hash database or is corrupt.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except (OSError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot open: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            meta = os.pread(fd, META_SIZE, 0)
        except OSError as exc:
            raise ValueError(f"cannot read: {exc.strerror or exc}") from None
        db = _Db(fd, info.st_size, meta)
        for bucket in range(db.max_bucket + 1):
            pgno = db.bucket_page(bucket)
            while pgno:
                page = db.page(pgno, HASH_PAGE_TYPES)
                for key, values in db.records(page):
                    if key == _BOOKKEEPING_KEY:
                        continue
                    yield from values
                (pgno,) = db.u32s(page, 16, 1)
    finally:
        os.close(fd)

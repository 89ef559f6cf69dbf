"""Salvage spool records from raw SQLite pages: torn WAL tails and damaged database files.

SQLite ignores every WAL frame after the first one whose checksum fails, and a damaged b-tree
page makes whole ranges of rows unreachable through SQL. Both can hold records a caller was
told were durable. This module reads table-leaf pages directly (SQLite file format, section
"B-tree pages"), decodes the cells that look like spool records, and keeps those whose CRC32
matches the stored checksum: a record either verifies bit for bit or is counted as corrupt.

Only records stored inline are recovered (an envelope above ~4 KB spills to overflow pages).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RawRow", "SalvageResult", "salvage_db_file", "salvage_wal"]

log = logging.getLogger(__name__)

_LEAF_TABLE = 0x0D
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24
_DB_HEADER = 100
_COLUMNS = 8  # id (NULL: rowid alias), stream, envelope_id, window_start, window_end,
#               created_at, crc, payload; generated columns are not stored
_SCHEMA_COLUMNS = 5  # sqlite_schema rows (type, name, tbl_name, rootpage, sql); the state
#                      table is WITHOUT ROWID, so its pages are never table leaves

RawRow = tuple[int, str, str, float, float, float, int, bytes]


@dataclass(slots=True)
class SalvageResult:
    """Rows that verified, by rowid, and the cells that failed to verify.

    A page may be read in several versions (main file, WAL frames); a row counts as corrupt
    only when no version of it verified: see :meth:`lost`.
    """

    rows: dict[int, RawRow] = field(default_factory=dict)
    corrupt_rowids: set[int] = field(default_factory=set)
    corrupt_unknown: int = 0
    pages_read: int = 0

    def add(self, row: RawRow) -> None:
        self.rows.setdefault(row[0], row)

    def merge(self, other: SalvageResult) -> None:
        for row in other.rows.values():
            self.add(row)
        self.corrupt_rowids |= other.corrupt_rowids
        self.corrupt_unknown += other.corrupt_unknown
        self.pages_read += other.pages_read

    def lost(self, present: set[int] | None = None) -> int:
        """Cells that failed to verify and whose row was not found intact anywhere else."""
        missing = self.corrupt_rowids - self.rows.keys()
        if present:
            missing -= present
        return len(missing) + self.corrupt_unknown


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= end:
            raise ValueError("varint runs past the cell")
        byte = buf[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    if pos + 8 >= end:
        raise ValueError("varint runs past the cell")
    return (value << 8) | buf[pos + 8], pos + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _value(buf: bytes, pos: int, serial: int) -> tuple[object, int]:
    if serial == 0:
        return None, pos
    if serial in _INT_SIZES:
        size = _INT_SIZES[serial]
        return int.from_bytes(buf[pos : pos + size], "big", signed=True), pos + size
    if serial == 7:
        return struct.unpack_from(">d", buf, pos)[0], pos + 8
    if serial in (8, 9):
        return serial - 8, pos
    if serial >= 12:
        size = (serial - 12) // 2
        chunk = bytes(buf[pos : pos + size])
        if serial % 2:
            return chunk.decode("utf-8"), pos + size
        return chunk, pos + size
    raise ValueError(f"reserved serial type {serial}")


def _decode_record(buf: bytes, start: int, end: int, rowid: int) -> RawRow | None:
    """A spool row from a record body, or None when the record is not shaped like one."""
    header_len, pos = _varint(buf, start, end)
    header_end = start + header_len
    if header_end > end:
        raise ValueError("record header runs past the cell")
    serials: list[int] = []
    while pos < header_end:
        serial, pos = _varint(buf, pos, header_end)
        serials.append(serial)
    if len(serials) == _SCHEMA_COLUMNS and serials[0] != 0:
        return None  # a row of sqlite_schema
    if len(serials) != _COLUMNS or serials[0] != 0:
        raise ValueError("record header damaged")
    values: list[object] = []
    pos = header_end
    for serial in serials[1:]:
        value, pos = _value(buf, pos, serial)
        values.append(value)
    if pos > end:
        raise ValueError("record body runs past the cell")
    stream, envelope_id, ws, we, created, crc, payload = values
    if not (
        isinstance(stream, str)
        and isinstance(envelope_id, str)
        and isinstance(ws, int | float)
        and isinstance(we, int | float)
        and isinstance(created, int | float)
        and isinstance(crc, int)
        and isinstance(payload, bytes)
    ):
        raise ValueError("column types damaged")
    if zlib.crc32(payload) != crc:
        raise ValueError("checksum mismatch")
    return (rowid, stream, envelope_id, float(ws), float(we), float(created), crc, payload)


def _leaf_rows(page: bytes, header_at: int, usable: int) -> Iterator[RawRow | int | None]:
    """Rows of a table-leaf page; for a cell that failed to verify its rowid, or None."""
    if len(page) < header_at + 8 or page[header_at] != _LEAF_TABLE:
        return
    ncells = int.from_bytes(page[header_at + 3 : header_at + 5], "big")
    max_local = usable - 35
    pointers = header_at + 8
    if pointers + 2 * ncells > usable:
        return
    for i in range(ncells):
        offset = int.from_bytes(page[pointers + 2 * i : pointers + 2 * i + 2], "big")
        if not pointers + 2 * ncells <= offset < usable:
            yield None
            continue
        rowid: int | None = None
        try:
            size, pos = _varint(page, offset, usable)
            rowid, pos = _varint(page, pos, usable)
            if rowid >= 1 << 63:
                rowid -= 1 << 64
            if size > max_local or pos + size > usable:
                continue  # spills to overflow pages: out of reach here
            row = _decode_record(page, pos, pos + size, rowid)
        except (ValueError, UnicodeDecodeError, struct.error, IndexError):
            yield rowid
            continue
        if row is not None:
            yield row


def _scan_page(result: SalvageResult, page: bytes, pgno: int, usable: int) -> None:
    result.pages_read += 1
    for row in _leaf_rows(page, _DB_HEADER if pgno == 1 else 0, usable):
        if row is None:
            result.corrupt_unknown += 1
        elif isinstance(row, int):
            result.corrupt_rowids.add(row)
        else:
            result.add(row)


def _wal_frames(wal: bytes) -> tuple[int, Iterator[tuple[int, int, bytes]]]:
    """Page size and ``(frame_index, pgno, page)`` of the WAL frames of its current generation."""
    if len(wal) < _WAL_HEADER + _FRAME_HEADER:
        return 0, iter(())
    magic, _, page_size = struct.unpack_from(">III", wal, 0)
    salts = wal[16:24]
    if magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
        # A damaged header: trust the first frame for the page size and salts.
        page_size = 4096
        salts = wal[_WAL_HEADER + 8 : _WAL_HEADER + 16]
    frame_size = _FRAME_HEADER + page_size

    def frames() -> Iterator[tuple[int, int, bytes]]:
        count = (len(wal) - _WAL_HEADER) // frame_size
        for index in range(count):
            at = _WAL_HEADER + index * frame_size
            if wal[at + 8 : at + 16] != salts:
                continue  # left over from an earlier WAL generation
            pgno = int.from_bytes(wal[at : at + 4], "big")
            yield index, pgno, wal[at + _FRAME_HEADER : at + frame_size]

    return page_size, frames()


def salvage_wal(wal: bytes, first_frame: int = 0, reserved: int = 0) -> SalvageResult:
    """Rows from the WAL frames from index ``first_frame`` on (0-based) of ``wal``'s generation.

    Pass SQLite's count of valid frames as ``first_frame`` to read only the frames it dropped.
    """
    result = SalvageResult()
    page_size, frames = _wal_frames(wal)
    for index, pgno, page in frames:
        if index >= first_frame:
            _scan_page(result, page, pgno, page_size - reserved)
    return result


def _free_pages(db: bytes, page_size: int) -> set[int] | None:
    """Page numbers on the freelist, or None when the freelist cannot be walked."""
    trunk = int.from_bytes(db[32:36], "big")
    total = int.from_bytes(db[36:40], "big")
    npages = len(db) // page_size
    free: set[int] = set()
    while trunk:
        if not 1 <= trunk <= npages or trunk in free:
            return None
        free.add(trunk)
        at = (trunk - 1) * page_size
        nxt = int.from_bytes(db[at : at + 4], "big")
        leaves = int.from_bytes(db[at + 4 : at + 8], "big")
        if leaves > page_size // 4 - 2:
            return None
        for i in range(leaves):
            free.add(int.from_bytes(db[at + 8 + 4 * i : at + 12 + 4 * i], "big"))
        trunk = nxt
    return free if len(free) == total else None


def salvage_db_file(path: Path, wal_path: Path | None = None) -> SalvageResult:
    """Rows from every readable leaf page of a damaged database file and its WAL.

    Pages on the freelist are skipped when the freelist can be walked (they hold rows that
    were already acknowledged); otherwise a few acknowledged rows may come back and are sent
    again, which the core drops as duplicates by envelope id.
    """
    result = SalvageResult()
    db = path.read_bytes()
    page_size = int.from_bytes(db[16:18], "big") if len(db) >= _DB_HEADER else 0
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        page_size = 4096
    reserved = db[20] if len(db) > 20 else 0
    usable = page_size - reserved
    free = _free_pages(db, page_size) if len(db) >= _DB_HEADER else None
    if free is None:
        log.warning("spool salvage: freelist of %s unreadable; scanning every page", path)
        free = set()
    for index in range(len(db) // page_size):
        pgno = index + 1
        if pgno not in free:
            _scan_page(result, db[index * page_size : pgno * page_size], pgno, usable)
    if wal_path is not None and wal_path.exists():
        result.merge(salvage_wal(wal_path.read_bytes(), 0, reserved))
    return result

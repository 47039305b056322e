"""The stored zip format as pure functions (PKWARE APPNOTE.TXT 6.3.10).

Members are stored, not deflated, and written with a data descriptor
(general purpose flag bit 3, §4.3.9) because their CRC-32 is known only
after their data went out. Every size and offset is therefore known before
the first byte: the archive's length and layout are a function of the
member names and sizes, which is what gives a ``Content-Length`` and lets a
``Range`` request start anywhere. ZIP64 extra fields (§4.5.3) and end
records (§4.3.14, §4.3.15) are used for any value that needs them.
"""

from __future__ import annotations

import struct
import time
from typing import NamedTuple

__all__ = ["ZIP64_LIMIT", "Entry", "Plan", "central_entry", "descriptor", "local_header", "plan"]

#: A 32-bit field holding this value means "see the ZIP64 extra field".
ZIP64_LIMIT = 0xFFFFFFFF
_COUNT_LIMIT = 0xFFFF

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # §4.3.7, 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # §4.3.12, 46 bytes
_DESCRIPTOR = struct.Struct("<IIII")  # §4.3.9, with its optional signature
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_END64 = struct.Struct("<IQHHIIQQQQ")  # §4.3.14, 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")  # §4.3.15, 20 bytes
_END = struct.Struct("<IHHHHIIH")  # §4.3.16, 22 bytes

_FLAGS = 0x08  # bit 3: CRC and sizes follow the data
_UTF8 = 0x800  # bit 11: the name is UTF-8 (§4.4.4, appendix D)
_UNIX = 3 << 8  # "version made by": UNIX, so external attributes are a st_mode


class Entry(NamedTuple):
    """One member's fixed facts: everything but its CRC-32."""

    name: bytes
    flags: int
    size: int
    dos_time: int
    dos_date: int
    mode: int
    offset: int  # of the local header
    zip64: bool  # the size needs the ZIP64 extra field

    @property
    def version(self) -> int:
        return 45 if self.zip64 else 20  # §4.4.3.2: 4.5 for ZIP64

    @property
    def stored_size(self) -> int:
        """Local header, data and descriptor: this member's bytes before the directory."""
        extra = 20 if self.zip64 else 0
        return _LOCAL.size + len(self.name) + extra + self.size + self.descriptor_size

    @property
    def descriptor_size(self) -> int:
        return _DESCRIPTOR64.size if self.zip64 else _DESCRIPTOR.size


class Plan(NamedTuple):
    entries: list[Entry]
    central_offset: int
    central_size: int
    end: bytes  # the end records, fixed by the layout
    size: int  # of the whole archive


def dos_stamp(mtime: float) -> tuple[int, int]:
    """MS-DOS time and date (§4.4.6), local time, clamped to 1980-2107."""
    year, month, day, hour, minute, second = time.localtime(mtime)[:6]
    if year < 1980:
        year, month, day, hour, minute, second = 1980, 1, 1, 0, 0, 0
    year = min(year, 2107)
    return (hour << 11) | (minute << 5) | (second // 2), ((year - 1980) << 9) | (month << 5) | day


def plan(members: list[tuple[str, int, float, int]], zip64_at: int = ZIP64_LIMIT) -> Plan:
    """Lay out ``(name, size, mtime, mode)`` members; ``zip64_at`` lowers the ZIP64 trigger."""
    entries: list[Entry] = []
    offset = 0
    for name, size, mtime, mode in members:
        encoded, flags = _encode(name)
        dos_time, dos_date = dos_stamp(mtime)
        entry = Entry(encoded, flags, size, dos_time, dos_date, mode, offset, size >= zip64_at)
        entries.append(entry)
        offset += entry.stored_size
    central_size = sum(
        _CENTRAL.size + len(e.name) + len(_central_extra(e, zip64_at)) for e in entries
    )
    end = _end_records(len(entries), offset, central_size, zip64_at)
    return Plan(entries, offset, central_size, end, offset + central_size + len(end))


def _encode(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), _FLAGS
    except UnicodeEncodeError:
        return name.encode("utf-8"), _FLAGS | _UTF8


def local_header(entry: Entry) -> bytes:
    """The local file header: CRC and sizes zero, they come in the descriptor."""
    extra = struct.pack("<HHQQ", 1, 16, 0, 0) if entry.zip64 else b""
    sizes = ZIP64_LIMIT if entry.zip64 else 0
    head = _LOCAL.pack(
        0x04034B50,
        entry.version,
        entry.flags,
        0,  # stored
        entry.dos_time,
        entry.dos_date,
        0,
        sizes,
        sizes,
        len(entry.name),
        len(extra),
    )
    return head + entry.name + extra


def descriptor(entry: Entry, crc: int) -> bytes:
    """The data descriptor: CRC-32 and sizes (8-byte sizes for a ZIP64 member)."""
    if entry.zip64:
        return _DESCRIPTOR64.pack(0x08074B50, crc, entry.size, entry.size)
    return _DESCRIPTOR.pack(0x08074B50, crc, entry.size, entry.size)


def _central_extra(entry: Entry, zip64_at: int) -> bytes:
    # §4.5.3: only the fields whose 32-bit slot holds 0xFFFFFFFF, in this order.
    values = [entry.size, entry.size] if entry.zip64 else []
    if entry.offset >= zip64_at:
        values.append(entry.offset)
    if not values:
        return b""
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


def central_entry(entry: Entry, crc: int, zip64_at: int = ZIP64_LIMIT) -> bytes:
    """The central directory header of one member."""
    extra = _central_extra(entry, zip64_at)
    size = ZIP64_LIMIT if entry.zip64 else entry.size
    offset = ZIP64_LIMIT if entry.offset >= zip64_at else entry.offset
    version = 45 if extra else 20
    head = _CENTRAL.pack(
        0x02014B50,
        _UNIX | version,
        version,
        entry.flags,
        0,
        entry.dos_time,
        entry.dos_date,
        crc,
        size,
        size,
        len(entry.name),
        len(extra),
        0,  # no comment
        0,  # disk number
        0,  # internal attributes
        (entry.mode & 0xFFFF) << 16,
        offset,
    )
    return head + entry.name + extra


def _end_records(count: int, offset: int, size: int, zip64_at: int) -> bytes:
    end = b""
    zip64 = count >= _COUNT_LIMIT or offset >= zip64_at or size >= zip64_at
    if zip64:
        end += _END64.pack(
            0x06064B50, _END64.size - 12, _UNIX | 45, 45, 0, 0, count, count, size, offset
        )
        end += _LOCATOR64.pack(0x07064B50, 0, offset + size, 1)
    # The 32-bit fields keep what fits; the ZIP64 record holds the full values.
    count, size, offset = min(count, _COUNT_LIMIT), min(size, ZIP64_LIMIT), min(offset, ZIP64_LIMIT)
    return end + _END.pack(0x06054B50, 0, 0, count, count, size, offset, 0)

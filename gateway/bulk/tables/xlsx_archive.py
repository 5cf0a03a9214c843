"""The zip container of an XLSX, read without trusting what it declares.

Before zipfile builds one object per entry, the archive and its central directory are
bounded from the end records, found where zipfile itself looks for them; the member list
is then refused for duplicates, encryption, unknown compression or declared sizes over the
caps; and `inflate` streams a member's bytes as its compressed stream really inflates,
chunk by chunk, whatever its header says, since the central directory can lie.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from gateway.bulk.tables.common import Limits, MiB, TableTooLarge, UnreadableFile

_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
# A real entry takes 46 bytes plus its name; zipfile builds an object per entry, so the
# directory's size is bounded before zipfile reads it.
_DIRECTORY_BYTES_PER_MEMBER = 512
_READ_BYTES = 256 * 1024
_INFLATE_BYTES = 1 * MiB


def check_directory(fh: BinaryIO, limits: Limits) -> None:
    """Bound the archive and its central directory before zipfile builds one object per entry.

    The end records are found where zipfile itself looks for them, so the sizes checked
    are the ones it will use.
    """
    size = fh.seek(0, os.SEEK_END)
    if size > limits.max_file_bytes:
        raise TableTooLarge("max_file_bytes", limits.max_file_bytes, f"a {size:,}-byte file")
    tail_size = min(size, _EOCD.size + (1 << 16))
    fh.seek(size - tail_size)
    tail = fh.read(tail_size)
    at = len(tail) - _EOCD.size
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise UnreadableFile("not an xlsx file: no zip directory")
    _, _, _, _, entries, directory_size, _, _ = _EOCD.unpack_from(tail, at)
    record_at = size - tail_size + at - _EOCD64_LOCATOR.size - _EOCD64.size
    if record_at >= 0:
        fh.seek(record_at)
        record = fh.read(_EOCD64.size + 4)
        if record[:4] == b"PK\x06\x06" and record[_EOCD64.size :] == b"PK\x06\x07":
            entries, directory_size = _EOCD64.unpack(record[: _EOCD64.size])[7:9]
    if entries > limits.max_members:
        raise TableTooLarge("max_members", limits.max_members, f"{entries:,} zip members")
    if directory_size > limits.max_members * _DIRECTORY_BYTES_PER_MEMBER:
        detail = f"a {directory_size:,}-byte zip directory"
        raise TableTooLarge("max_members", limits.max_members, detail)


def checked_members(archive: zipfile.ZipFile, limits: Limits) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > limits.max_members:
        detail = f"{len(members):,} zip members"
        raise TableTooLarge("max_members", limits.max_members, detail)
    if len({info.filename for info in members}) != len(members):
        # Two readers could each pick a different copy: the one checked, the one read.
        raise UnreadableFile("not an xlsx file: duplicate zip member names")
    for info in members:
        if info.flag_bits & 0x1:
            raise UnreadableFile("encrypted xlsx files are not supported")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnreadableFile(f"unsupported zip compression in {info.filename}")
    declared = sum(info.file_size for info in members)
    if declared > limits.max_inflated_bytes:
        detail = f"zip members declaring {declared:,} inflated bytes"
        raise TableTooLarge("max_inflated_bytes", limits.max_inflated_bytes, detail)
    return members


def inflate(fh: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes as its compressed stream really inflates, whatever was declared."""
    fh.seek(info.header_offset)
    header = fh.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise UnreadableFile(f"corrupt zip member {info.filename}")
    name_size, extra_size = _LOCAL_HEADER.unpack(header)[9:11]
    fh.seek(info.header_offset + _LOCAL_HEADER.size + name_size + extra_size)
    left = info.compress_size
    if info.compress_type == zipfile.ZIP_STORED:
        while left > 0:
            chunk = _read_compressed(fh, left)
            left -= len(chunk)
            yield chunk
        return
    inflater, pending = zlib.decompressobj(-zlib.MAX_WBITS), b""
    while not inflater.eof:
        if not pending and left > 0:
            pending = _read_compressed(fh, left)
            left -= len(pending)
        chunk = inflater.decompress(pending, _INFLATE_BYTES)
        pending = inflater.unconsumed_tail
        if chunk:
            yield chunk
        elif not pending and left <= 0:
            raise UnreadableFile(f"truncated zip member {info.filename}")


def _read_compressed(fh: BinaryIO, left: int) -> bytes:
    chunk = fh.read(min(left, _READ_BYTES))
    if not chunk:
        raise UnreadableFile("truncated zip file")
    return chunk

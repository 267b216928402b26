"""The end-of-file address in an HDF5 superblock, moved up before HDF5 writes metadata.

A reader refuses any address past the end-of-file address (EOA) in the superblock
("addr overflow"). HDF5 writes the superblock, with the new EOA, last in a flush, after
the chunk indexes that point at chunks written since the previous flush: a process
killed in between leaves indexes that point past the stored EOA, and every read of the
dataset fails. :func:`cover_written` sets the stored EOA to the file's size *before*
the flush, so every chunk already written is inside it whatever the flush gets to.
"""

from __future__ import annotations

import os
import struct

__all__ = ["cover_written", "eoa_patch", "lookup3"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF
# Where the base address and the EOA are (with 8-byte offsets), and where the checksum
# of the bytes before it is, by superblock version: 0 (no checksum), 2 and 3.
_LAYOUT = {0: (24, 40, None), 2: (12, 28, 44), 3: (12, 28, 44)}


def cover_written(fd: int) -> None:
    """Raise the EOA stored in the superblock of the HDF5 file open as ``fd`` to the
    file's size (one write of at most 20 bytes in the first page: never torn by a kill)."""
    patch = eoa_patch(os.pread(fd, 48, 0), os.fstat(fd).st_size)
    if patch is not None:
        os.pwrite(fd, patch[1], patch[0])


def eoa_patch(head: bytes, size: int) -> tuple[int, bytes] | None:
    """Where and what to write to raise the EOA in the superblock whose first 48 bytes
    are ``head`` to ``size``; ``None`` when it covers ``size`` already.

    Files of another superblock version, a user block or 4-byte offsets are left alone.
    """
    if len(head) < 48 or head[:8] != _SIGNATURE or head[8] not in _LAYOUT:
        return None
    base_at, eoa_at, checksum_at = _LAYOUT[head[8]]
    offsets = head[13] if head[8] == 0 else head[9]
    if offsets != 8 or struct.unpack_from("<Q", head, base_at)[0] != 0:
        return None
    (stored,) = struct.unpack_from("<Q", head, eoa_at)
    if size <= stored:
        return None
    patched = bytearray(head)
    struct.pack_into("<Q", patched, eoa_at, size)
    end = eoa_at + 8
    if checksum_at is not None:
        struct.pack_into("<I", patched, checksum_at, lookup3(bytes(patched[:checksum_at])))
        end = checksum_at + 4
    return eoa_at, bytes(patched[eoa_at:end])


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5's metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    at = 0
    while length > 12:
        x, y, z = struct.unpack_from("<III", data, at)
        a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 4)  # mix()
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 6)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 8)
        b = (b + a) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 16)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 19)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 4)
        b = (b + a) & _MASK
        length -= 12
        at += 12
    if length == 0:
        return int(c)
    x, y, z = struct.unpack("<III", data[at:] + bytes(12 - length))
    a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
    c = ((c ^ b) - _rot(b, 14)) & _MASK  # final()
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    return int(((c ^ b) - _rot(b, 24)) & _MASK)

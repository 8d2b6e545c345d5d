"""TFRecord framing and CRC32C, without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length            (little endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2**32``. Files written here are read by
``tf.data.TFRecordDataset``; files written by TensorFlow (or TFDS) are read here, with both CRCs checked.

CRC32C (Castagnoli) comes from ``google-crc32c`` (C extension) when it is installed; otherwise a pure-Python
table implementation is used (correct but ~10 MB/s: install ``google-crc32c`` for real data).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator

try:  # C implementation: ~GB/s.
    import google_crc32c as _gcrc

    def crc32c(data: bytes) -> int:
        """CRC32C (Castagnoli) of `data` as an unsigned 32-bit int."""
        return _gcrc.value(data)

    CRC32C_IMPLEMENTATION = "google-crc32c/" + _gcrc.implementation
except ImportError:  # pragma: no cover - exercised by test_crc via crc32c_python
    _gcrc = None

    def crc32c(data: bytes) -> int:
        """CRC32C (Castagnoli) of `data` as an unsigned 32-bit int."""
        return crc32c_python(data)

    CRC32C_IMPLEMENTATION = "pure-python"


def _make_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: bytes) -> int:
    """Reference table-driven CRC32C (slow; used when google-crc32c is missing and to cross-check it)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordCorruptError(ValueError):
    """A TFRecord file that is truncated or whose CRC does not match.

    Attributes: path, offset (byte offset of the record's header in the file), reason, and `resumable`: True when
    the record's length was trustworthy, so reading can continue with the next record.
    """

    def __init__(self, path: str, offset: int, reason: str, resumable: bool):
        super().__init__(f"corrupt TFRecord {path} at byte offset {offset}: {reason}")
        self.path, self.offset, self.reason, self.resumable = str(path), offset, reason, resumable


def frame(data: bytes) -> bytes:
    """One record's bytes, framed (header + data + footer)."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data)))
    )


class TFRecordWriter:
    """Writes framed records to `path` (a local file). Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._f = open(self.path, "wb")
        self.num_records = 0

    def write(self, data: bytes) -> None:
        self._f.write(frame(data))
        self.num_records += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_record(f: io.BufferedIOBase, path: str, offset: int, check_crc: bool = True) -> bytes | None:
    """Reads the record whose header starts at `offset` (`f` must be positioned there).

    Returns the data, or None at a clean end of file. Raises TFRecordCorruptError naming `path` and `offset` on a
    truncated record or a CRC mismatch.
    """
    header = f.read(12)
    if not header:
        return None
    if len(header) < 12:
        raise TFRecordCorruptError(path, offset, f"truncated header ({len(header)} of 12 bytes)", False)
    length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
    if check_crc and masked_crc32c(length_bytes) != length_crc:
        raise TFRecordCorruptError(path, offset, "length CRC32C mismatch (header corrupt)", False)
    (length,) = struct.unpack("<Q", length_bytes)
    data = f.read(length)
    footer = f.read(4)
    if len(data) < length or len(footer) < 4:
        raise TFRecordCorruptError(
            path, offset, f"truncated record (expected {length} data bytes + 4 CRC bytes, file ends first)", False
        )
    if check_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise TFRecordCorruptError(path, offset, f"data CRC32C mismatch in a {length}-byte record", True)
    return data


def iter_records(path: str | os.PathLike, check_crc: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yields (offset, data) for every record of a local TFRecord file; raises TFRecordCorruptError."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        offset = 0
        while (data := read_record(f, path, offset, check_crc)) is not None:
            yield offset, data
            offset = f.tell()

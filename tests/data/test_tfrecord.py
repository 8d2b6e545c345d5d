import struct

import grain
import pytest

from samjax.data import tfrecord
from samjax.data.tfrecord import TFRecordCorruptError, TFRecordWriter, iter_records


def test_crc32c_known_values():
    # The CRC32C check value (RFC 3720 / iSCSI): CRC32C(b"123456789") == 0xE3069283.
    assert tfrecord.crc32c(b"123456789") == 0xE3069283
    assert tfrecord.crc32c_python(b"123456789") == 0xE3069283
    assert tfrecord.crc32c_python(b"") == tfrecord.crc32c(b"") == 0
    data = bytes(range(256)) * 7
    assert tfrecord.crc32c_python(data) == tfrecord.crc32c(data)
    # 32 bytes of zeros, RFC 3720 B.4 test vector.
    assert tfrecord.crc32c(bytes(32)) == 0x8A9136AA


def test_framing_layout(tmp_path):
    path = tmp_path / "a.tfrecord"
    with TFRecordWriter(path) as w:
        w.write(b"hello")
        w.write(b"")
    raw = path.read_bytes()
    assert raw[:8] == struct.pack("<Q", 5)
    assert struct.unpack("<I", raw[8:12])[0] == tfrecord.masked_crc32c(raw[:8])
    assert raw[12:17] == b"hello"
    assert struct.unpack("<I", raw[17:21])[0] == tfrecord.masked_crc32c(b"hello")
    masked = tfrecord.masked_crc32c(b"hello")
    crc = tfrecord.crc32c(b"hello")
    assert masked == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert [d for _, d in iter_records(path)] == [b"hello", b""]
    # An independent reader (grain's) parses the same framing.
    assert list(grain.experimental.TFRecordIterDataset(str(path))) == [b"hello", b""]


def _three(tmp_path):
    path = tmp_path / "r.tfrecord"
    with TFRecordWriter(path) as w:
        for d in (b"a" * 10, b"b" * 20, b"c" * 30):
            w.write(d)
    return path


def test_flipped_data_byte_names_file_and_offset(tmp_path):
    path = _three(tmp_path)
    raw = bytearray(path.read_bytes())
    second = 12 + 10 + 4
    raw[second + 12 + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordCorruptError, match=rf"{path.name} at byte offset {second}: data CRC32C") as e:
        list(iter_records(path))
    assert e.value.resumable and e.value.offset == second


def test_flipped_length_and_truncation(tmp_path):
    path = _three(tmp_path)
    raw = path.read_bytes()
    bad = bytearray(raw)
    bad[0] ^= 0x04
    path.write_bytes(bytes(bad))
    with pytest.raises(TFRecordCorruptError, match="byte offset 0: length CRC32C"):
        list(iter_records(path))
    path.write_bytes(raw[:-7])
    with pytest.raises(TFRecordCorruptError, match=r"byte offset 62: truncated record") as e:
        list(iter_records(path))
    assert not e.value.resumable
    path.write_bytes(raw[:5])
    with pytest.raises(TFRecordCorruptError, match="truncated header"):
        list(iter_records(path))

"""grain source reading one TFRecord file sequentially, CRCs checked, with a checkpointable position.

grain's own `TFRecordIterDataset` does not check CRCs; this one does, and its iterator state is
`{"offset", "records", "corrupt"}` (byte offset of the next record, records yielded, corrupt records skipped), so
a restored iterator continues at the same byte. Elements are dicts::

    data: bytes (one serialized Example), path: str, offset: int (header offset), epoch: int

Corruption: with `skip_corrupt=False` a bad record raises `TFRecordCorruptError` naming the file and the byte
offset. With `skip_corrupt=True` it is logged and counted in the state's `corrupt`: a record whose data CRC fails
is skipped and reading goes on with the next one; a corrupt header or a truncated record ends that file (its
length cannot be trusted). `count_corrupt(iterator)` sums the counts over a whole pipeline's state.
"""

from __future__ import annotations

import logging
from typing import Any

import grain

from samjax.data.tfrecord import TFRecordCorruptError, read_record

log = logging.getLogger(__name__)


class TFRecordFileDataset(grain.IterDataset):
    """Records of one local TFRecord file (see module docstring)."""

    def __init__(self, path: str, *, epoch: int = 0, skip_corrupt: bool = False):
        super().__init__()
        self.path, self.epoch, self.skip_corrupt = str(path), int(epoch), skip_corrupt

    def __iter__(self) -> _TFRecordFileIterator:
        return _TFRecordFileIterator(self)

    def __str__(self) -> str:
        return f"TFRecordFileDataset({self.path!r}, epoch={self.epoch})"


class _TFRecordFileIterator(grain.DatasetIterator):
    def __init__(self, ds: TFRecordFileDataset):
        super().__init__()
        self._ds = ds
        self._f = None
        self._offset, self._records, self._corrupt, self._done = 0, 0, 0, False

    def _file(self):
        if self._f is None:
            self._f = open(self._ds.path, "rb")
            self._f.seek(self._offset)
        return self._f

    def __next__(self) -> dict[str, Any]:
        while not self._done:
            f, offset = self._file(), self._offset
            try:
                data = read_record(f, self._ds.path, offset)
            except TFRecordCorruptError as e:
                if not self._ds.skip_corrupt:
                    raise
                self._corrupt += 1
                log.warning("skipping %s%s", e, "" if e.resumable else " (rest of the file skipped)")
                if e.resumable:
                    self._offset = f.tell()
                else:
                    self._done = True
                continue
            if data is None:
                self._done = True
                break
            self._offset = f.tell()
            self._records += 1
            return {"data": data, "path": self._ds.path, "offset": offset, "epoch": self._ds.epoch}
        self.close_file()
        raise StopIteration

    def get_state(self) -> dict[str, Any]:
        return {"offset": self._offset, "records": self._records, "corrupt": self._corrupt, "done": int(self._done)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.close_file()
        self._offset, self._records = int(state["offset"]), int(state["records"])
        self._corrupt, self._done = int(state["corrupt"]), bool(state["done"])

    def close_file(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def close(self) -> None:
        self.close_file()
        super().close()


def count_corrupt(state: Any) -> int:
    """Sum of the `corrupt` counters found anywhere in a (nested) grain iterator state."""
    if isinstance(state, dict):
        own = int(state["corrupt"]) if {"offset", "records", "corrupt"} <= state.keys() else 0
        return own + sum(count_corrupt(v) for k, v in state.items() if k != "corrupt")
    if isinstance(state, (list, tuple)):
        return sum(count_corrupt(v) for v in state)
    return 0

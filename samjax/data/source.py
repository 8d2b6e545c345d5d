"""grain source reading one TFRecord file sequentially, CRCs checked, with a checkpointable position.

grain's own `TFRecordIterDataset` does not check CRCs; this one does, and its iterator state is
`{"offset", "records", "corrupt"}` (byte offset of the next record, records yielded, corrupt records skipped), so
a restored iterator continues at the same byte. Elements are dicts::

    data: bytes (one serialized Example), path: str, offset: int (header offset), epoch: int

Corruption: with `skip_corrupt=False` a bad record raises `TFRecordCorruptError` naming the file and the byte
offset. With `skip_corrupt=True` it is logged and a marker element `{"corrupt": message}` takes its place (the
pipeline's `DropCorrupt` stage drops and counts markers, in its checkpointed state); a record whose data CRC fails
is skipped and reading goes on with the next one; a corrupt header or a truncated record ends that file (its
length cannot be trusted).
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
                msg = f"{e}{'' if e.resumable else ' (rest of the file skipped)'}"
                log.warning("skipping %s", msg)
                if e.resumable:
                    self._offset = f.tell()
                else:
                    self._done = True
                return {"corrupt": msg}
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


class DropCorrupt(grain.IterDataset):
    """Drops `{"corrupt": message}` markers and counts them; the count is part of the iterator state."""

    def __init__(self, parent: grain.IterDataset):
        super().__init__(parent)

    def __iter__(self) -> _DropCorruptIterator:
        return _DropCorruptIterator(self._parent.__iter__())


class _DropCorruptIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self._count = 0

    def __next__(self):
        while True:
            x = next(self._parent)
            if isinstance(x, dict) and "corrupt" in x and len(x) == 1:
                self._count += 1
                continue
            return x

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), COUNT_KEY: self._count}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._count = int(state[COUNT_KEY])


COUNT_KEY = "corrupt_records_skipped"


def count_corrupt(state: Any) -> int:
    """Sum of the DropCorrupt counters anywhere in a (nested) grain iterator state (all mp_prefetch workers)."""
    if isinstance(state, dict):
        return int(state.get(COUNT_KEY, 0)) + sum(count_corrupt(v) for k, v in state.items() if k != COUNT_KEY)
    if isinstance(state, (list, tuple)):
        return sum(count_corrupt(v) for v in state)
    if isinstance(state, (str, bytes)) and (
            COUNT_KEY.encode() in (state if isinstance(state, bytes) else state.encode())):
        import json  # noqa: PLC0415 (mp_prefetch may keep worker states JSON-encoded)

        try:
            return count_corrupt(json.loads(state))
        except ValueError:
            return 0
    return 0

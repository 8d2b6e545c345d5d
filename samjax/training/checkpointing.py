"""The orbax CheckpointManager that saves and resumes a training run.

`WORKDIR/checkpoints/<step>/{state,data}`: the state (StandardSave) and the grain iterator state
(grain.checkpoint.CheckpointSave), written asynchronously, the last `keep` kept. `restore` reads the latest
into the given shardings and rewinds the iterator, so a resumed run continues bit-identically.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class Checkpoints:
    """orbax CheckpointManager of (state, data iterator) under `directory`; async; keeps the last `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iter=None, force: bool = False) -> bool:
        args = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, abstract: Any, data_iter=None, step: int | None = None) -> dict:
        """The state at `step` (default latest) in the shardings of `abstract`; rewinds `data_iter` in place."""
        step = self.manager.latest_step() if step is None else step
        args = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]
        except KeyError as e:  # grain's set_state on an iterator state of another pipeline layout
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} holds a data-iterator state this run's input "
                f"pipeline cannot take (missing {e}): resume with the data settings it was saved with (e.g. "
                f"config.data.worker_count), or start a new workdir") from e

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

"""Shared fixtures: tiny synthetic SA-1B data converted to TFRecord once per test session."""

from __future__ import annotations

import pytest

from samjax.data.sa1b import convert
from samjax.data.synthetic import write_synthetic

SIZE = (72, 96)  # tiny H x W: fast, still ~8 masks per image
NUM_IMAGES = 8


@pytest.fixture(scope="session")
def sa1b_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sa1b")
    write_synthetic(d, NUM_IMAGES, seed=3, size=SIZE)
    return d


@pytest.fixture(scope="session")
def tfrecord_dir(tmp_path_factory, sa1b_dir):
    out = tmp_path_factory.mktemp("tfrecord")
    s = convert([str(sa1b_dir)], str(out), num_shards=4, workers=1, progress=False)
    assert s["images"] == NUM_IMAGES and s["skipped"] == 0
    return out

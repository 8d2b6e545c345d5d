import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samjax.data import rle
from samjax.data.synthetic import make_sample


def test_decode_matches_pycocotools():
    _, doc = make_sample(seed=5, image_id=1, height=80, width=110)
    assert len(doc["annotations"]) >= 5
    for a in doc["annotations"]:
        counts = a["segmentation"]["counts"]
        ref = mask_utils.decode({"size": [80, 110], "counts": counts.encode()})
        np.testing.assert_array_equal(rle.decode(counts, 80, 110), ref)
        np.testing.assert_array_equal(rle.decode_columns(rle.rle_runs(counts), 80, 7, 50), ref[:, 7:50].T)


def test_edge_masks():
    for m in (np.zeros((9, 7), np.uint8), np.ones((9, 7), np.uint8), np.eye(9, 7, dtype=np.uint8)):
        counts = mask_utils.encode(np.asfortranarray(m))["counts"]
        np.testing.assert_array_equal(rle.decode(counts, 9, 7), m)


@pytest.mark.parametrize("counts, msg", [("!!", "invalid char"), ("a", "end inside"), ("", "cover 0 pixels"),
                                          ("0000", "cover 0 pixels"), ("3O", "negative")])
def test_malformed(counts, msg):
    with pytest.raises(ValueError, match=msg):
        rle.check_runs(rle.rle_runs(counts), 4, 4)

import os

import numpy as np

from samjax.data.synthetic import MIN_OBJECT_FRAC, make_sample, write_synthetic


def test_default_object_size_range_is_unchanged():
    assert MIN_OBJECT_FRAC == 0.04
    assert make_sample(4, 2, 64, 64, 6) == make_sample(4, 2, 64, 64, 6, min_object_frac=0.04)


def test_min_object_frac_raises_object_sizes():
    def areas(frac):
        return np.array([a["area"] for i in range(12) for a in make_sample(0, i, 128, 128, 6, frac)[1]["annotations"]])

    small, large = areas(0.04), areas(0.1)
    assert np.median(large) > 1.5 * np.median(small)
    assert (large < 64).mean() < (small < 64).mean()  # fewer masks under 8x8 px


def test_min_mask_area_drops_small_annotations_only():
    base, big = make_sample(0, 3, 128, 128, 6, 0.1), make_sample(0, 3, 128, 128, 6, 0.1, min_mask_area=256)
    assert base[0] == big[0]  # the same pixels
    assert all(a["area"] >= 256 for a in big[1]["annotations"])
    assert sorted(a["area"] for a in big[1]["annotations"]) == sorted(a["area"] for a in base[1]["annotations"]
                                                                       if a["area"] >= 256)
    assert make_sample(4, 2, 64, 64, 6) == make_sample(4, 2, 64, 64, 6, min_mask_area=0)


def test_workers_write_the_same_files(tmp_path):
    """Samples made in 2 spawned processes are the same bytes, in the same id order, as made in this one."""
    one = write_synthetic(tmp_path / "one", 6, seed=5, size=(40, 56), first_id=7, num_objects=3)
    two = write_synthetic(tmp_path / "two", 6, seed=5, size=(40, 56), first_id=7, num_objects=3, workers=2)
    assert [os.path.basename(p) for p in one] == [os.path.basename(p) for p in two]
    assert os.path.basename(one[0]) == "sa_7.jpg" and len(one) == 12
    for a, b in zip(one, two):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), a

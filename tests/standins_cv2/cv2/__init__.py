"""TEST STAND-IN for OpenCV, which is not installed here: only `connectedComponentsWithStats`, the one call the
official `remove_small_regions` makes. Built on scikit-image's labelling (samjax itself uses scipy.ndimage), so
the test compares two independent labellings. Labels are numbered in raster order of each component's first
pixel, as OpenCV numbers them; stats' last column is the area, row 0 the background."""

import numpy as np
from skimage import measure

STANDIN = True
CC_STAT_AREA = 4


def connectedComponentsWithStats(image, connectivity=8):
    assert connectivity == 8
    labels = measure.label(np.asarray(image) != 0, connectivity=2, background=0).astype(np.int32)
    n = int(labels.max()) + 1
    stats = np.zeros((n, 5), np.int32)
    stats[:, CC_STAT_AREA] = np.bincount(labels.ravel(), minlength=n)
    centroids = np.zeros((n, 2), np.float64)
    return n, labels, stats, centroids

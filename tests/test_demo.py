"""`make demo` as it runs: python -m samjax.demo --out DIR on its embedded default (random ViT-B weights)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samjax import demo


@pytest.mark.slow  # the real ViT-B architecture at 1024
def test_make_demo_default(tmp_path, capsys):
    out = tmp_path / "out" / "demo"
    assert demo.main(["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weights are RANDOM and the masks are meaningless" in text  # says so, and how to get real ones
    assert "--checkpoint sam_vit_b_01ec64.pth" in text and "12 blocks, embed 768" in text
    overlay = Image.open(out / "overlay.png")
    assert overlay.size == (3 * 451, 300)  # three masks beside each other on the 451x300 photo
    best = np.asarray(Image.open(out / "mask_best.png"))
    assert best.shape == (300, 451) and set(np.unique(best)) <= {0, 255}

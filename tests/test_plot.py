"""python -m samjax.plot: training curves from the event files samjax.train writes (same writer, known values)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samjax import plot
from samjax.training import metrics


@pytest.fixture()
def workdir(tmp_path):
    """A workdir as samjax.train leaves it: tensorboard/ with train/* every step and eval/* at the end; a resume
    re-wrote steps 7..8 with other values (the last ones written must win)."""
    tb = metrics.TensorBoard(str(tmp_path / "tensorboard"))
    for step in range(1, 11):
        tb.scalars(step, {"train/loss": 2.0 / step, "train/focal": 0.1 / step, "train/dice": 0.9 - 0.02 * step,
                          "train/iou_mse": 0.05, "train/miou_first": 0.05 * step, "train/miou_last": 0.06 * step,
                          "train/lr": 1e-3})
    tb.close()
    tb = metrics.TensorBoard(str(tmp_path / "tensorboard"))  # the resumed run: a second event file
    for step in (7, 8):
        tb.scalars(step, {"train/loss": 9.0})
    tb.scalars(10, {"eval/miou_1pt": 0.42})
    tb.close()
    return tmp_path


def test_read_scalars(workdir):
    s = plot.read_scalars(workdir)
    steps, loss = s["train/loss"]
    np.testing.assert_array_equal(steps, np.arange(1, 11))
    expect = 2.0 / np.arange(1, 11)
    expect[[6, 7]] = 9.0
    np.testing.assert_allclose(loss, expect, rtol=1e-6)
    assert s["eval/miou_1pt"][1].tolist() == pytest.approx([0.42])
    np.testing.assert_array_equal(plot.read_scalars(workdir / "tensorboard")["train/loss"][1], loss)


def test_cli_writes_png(workdir, tmp_path, capsys):
    out = tmp_path / "figs" / "curves.png"
    assert plot.main([str(workdir), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "10 logged steps, 1..10" in line and "eval/miou_1pt" in line
    im = Image.open(out)
    assert im.format == "PNG" and im.size == (1000, 360)
    pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # curves, text and legend drawn, not a blank canvas
    assert plot.main([str(workdir)]) == 0 and (workdir / "curves.png").is_file()  # default location


def test_figure_has_the_curves(workdir):
    import matplotlib

    matplotlib.use("Agg")
    fig = plot.plot_curves(plot.read_scalars(workdir))
    ax_loss, ax_miou = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["loss", "focal", "dice", "IoU MSE"]
    assert [line.get_label() for line in ax_miou.lines] == ["train, first prompt", "train, last round",
                                                            "held-out, 1 point"]
    assert ax_loss.get_yscale() == "log"
    np.testing.assert_allclose(ax_miou.lines[2].get_ydata(), [0.42], rtol=1e-6)


def test_low_res_stage_goes_first(workdir):
    """A run with a low-resolution first stage (WORKDIR/low_res): its 5 steps, then the main stage's 10 after them."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    tb = metrics.TensorBoard(str(workdir / "low_res" / "tensorboard"))
    for step in range(1, 6):
        tb.scalars(step, {"train/loss": 5.0, "train/miou_first": 0.01})
    tb.close()
    for d, size in ((workdir / "low_res", 64), (workdir, 128)):
        (d / "config.json").write_text(json.dumps({"model": {"image_size": size}}))
    scalars, switches = plot.read_run(workdir)
    assert switches == [(5, "64 -> 128 px")]
    steps, loss = scalars["train/loss"]
    np.testing.assert_array_equal(steps, np.arange(1, 16))
    assert loss[:5].tolist() == [5.0] * 5 and loss[5] == pytest.approx(2.0)
    np.testing.assert_array_equal(scalars["eval/miou_1pt"][0], [15])  # only the main stage evaluated
    alone, none = plot.read_run(workdir / "low_res")  # the stage's own workdir has no stage before it
    assert none == [] and alone["train/loss"][0].tolist() == [1, 2, 3, 4, 5]
    assert plot.main([str(workdir)]) == 0
    fig = plot.plot_curves(scalars, switches=switches)
    assert "64 -> 128 px" in [line.get_label() for line in fig.axes[0].lines]
    assert fig.axes[0].get_yscale() == "log"


def test_two_low_res_stages_go_first_smallest_first(workdir):
    """Stages at 32 px (WORKDIR/low_res/low_res, 3 steps) and 64 px (WORKDIR/low_res, 5 steps), then the main 10."""
    import json

    for d, size, n, loss in ((workdir / "low_res" / "low_res", 32, 3, 7.0), (workdir / "low_res", 64, 5, 5.0)):
        tb = metrics.TensorBoard(str(d / "tensorboard"))
        for step in range(1, n + 1):
            tb.scalars(step, {"train/loss": loss})
        tb.close()
        (d / "config.json").write_text(json.dumps({"model": {"image_size": size}}))
    (workdir / "config.json").write_text(json.dumps({"model": {"image_size": 128}}))
    scalars, switches = plot.read_run(workdir)
    assert switches == [(3, "32 -> 64 px"), (8, "64 -> 128 px")]
    steps, loss = scalars["train/loss"]
    np.testing.assert_array_equal(steps, np.arange(1, 19))
    assert loss[:8].tolist() == [7.0] * 3 + [5.0] * 5 and loss[8] == pytest.approx(2.0)
    fig = plot.plot_curves(scalars, switches=switches)
    assert [line.get_label() for line in fig.axes[0].lines][-2:] == ["32 -> 64 px", "64 -> 128 px"]


def test_no_events_is_one_line(tmp_path, capsys):
    assert plot.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no TensorBoard event files") and "\n" not in err

"""notebooks/*.ipynb run top to bottom on CPU with their small parameters (SAMJAX_NOTEBOOK_SMOKE=1), offline.

Each notebook runs in a fresh ipykernel (nbclient), as in Colab, with its working directory, WORKDIR, IPython,
matplotlib and Jupyter state all in tmp dirs; proxies point at a closed port so any network access fails. A cell
that raises fails the test with the cell's source and traceback. The three notebooks share one WORKDIR, so the
tiny model the first one trains (no checkpoint given) is re-used by the others, as it is in a Colab session (the SAM 2
notebook runs a random SAM 2 instead).
text.ipynb, given no detector or CLIP checkpoint, builds tiny random ones (and says so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["predict", "amg", "finetune", "text", "sam2"]  # predict first: it trains the shared tiny model
FIGURES = {"predict": 4, "amg": 1, "finetune": 3, "text": 2, "sam2": 2}  # matplotlib figures each draws


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Environment for the kernels: everything they write goes under one tmp dir."""
    root = tmp_path_factory.mktemp("notebooks")
    env = {
        "SAMJAX_NOTEBOOK_SMOKE": "1", "SAMJAX_NOTEBOOK_WORKDIR": str(root / "work"), "SAMJAX_CHECKPOINT": "",
        "SAMJAX_DETECTOR": "", "SAMJAX_CLIP": "",
        "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "IPYTHONDIR": str(root / "ipython"), "MPLCONFIGDIR": str(root / "mpl"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter"), "JUPYTER_DATA_DIR": str(root / "jupyter"),
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "",
        "PIP_NO_INDEX": "1",
        # One XLA compilation cache for the three kernels: the predictor's compiled code is shared, as it would
        # be between runs of one Colab session.
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
    }
    return root, env


def test_notebooks_are_committed_clean():
    """Outputs cleared, one parameters cell first, every notebook named in the README."""
    readme = (ROOT / "README.md").read_text()
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: clear the outputs"
        assert code[0].metadata.get("tags") == ["parameters"] and "SAMJAX_NOTEBOOK_SMOKE" in code[0].source
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
        assert "runtime.describe()" in "".join(c.source for c in code), f"{name}: say what it runs on"
        assert f"notebooks/{name}.ipynb" in readme


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, session, monkeypatch):
    root, env = session
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cwd = root / f"cwd_{name}"
    cwd.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{name}.ipynb: a cell failed:\n{e}")
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "running on: CPU" in text and "no accelerator" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= FIGURES[name], f"{name}: expected {FIGURES[name]} matplotlib figures, got {images}"
    work = root / "work"
    if name == "sam2":  # a random SAM 2 (no SAM 2 checkpoint offline): said loudly; image and video both run
        assert "NO SAM 2 CHECKPOINT GIVEN: RANDOM WEIGHTS" in text and "frames, objects [1, 2]" in text
        return
    assert (work / "tiny_synthetic" / "model" / "config.json").is_file()
    if name == "predict":
        assert "NO CHECKPOINT GIVEN" in text  # the fallback says so loudly
    if name == "amg":
        records = json.loads((work / "masks_coco_rle.json").read_text())
        assert len(records) > 0 and "round trip OK" in text  # smoke thresholds are 0: every mask is exported
    if name == "text":  # the random stand-ins say so loudly; every mask is named
        assert "NO DETECTOR GIVEN" in text and "NO CLIP GIVEN" in text and "second call: 3 masks" in text
    if name == "finetune":
        assert (work / "finetune" / "run" / "model" / "config.json").is_file()
        assert "mean IoU: before" in text and "loss " in text


def test_documented_commands_on_a_training_workdir(session, tmp_path, capsys):
    """README's `python -m samjax.plot WORKDIR` and `python -m samjax.evaluate` on the workdir of the real (short)
    tiny_synthetic run the notebooks made: the layout `make train` leaves."""
    from samjax import evaluate, plot

    root, _ = session
    workdir = root / "work" / "tiny_synthetic"
    if not (workdir / "model").is_dir():
        pytest.skip("needs the tiny_synthetic run of test_notebook_runs[predict] (run the whole file)")
    assert plot.main([str(workdir), "--out", str(tmp_path / "curves.png")]) == 0
    # log_every 1 in the notebooks' smoke run: 8 steps, at 128 px only (smoke skips tiny_synthetic's low_res stages;
    # tests/test_plot.py reads staged workdirs)
    assert "8 logged steps, 1..8" in capsys.readouterr().out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    data = str(workdir / "data" / "eval" / "*.tfrecord")
    assert evaluate.main(["tfrecord", "--checkpoint", str(workdir / "model"), "--data", data, "--num-images", "2",
                          "--max-masks", "4", "--clicks", "1", "--out", str(tmp_path / "eval.json")]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["num_images"] == 2 and 0.0 <= res["miou_1pt"] <= 1.0

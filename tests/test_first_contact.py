"""The errors people meet first: each is one line on stderr saying what to do, and exit code 2, not a traceback.

A missing checkpoint, a .pth that is not a SAM checkpoint (another model's state dict, or not a checkpoint at
all), an image path that does not exist, and a TPU held by another process (simulated with libtpu's messages).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from samjax import convert, demo, evaluate, infer, runtime, train
from samjax.amg import cli as amg_cli

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = "sam_vit_b_01ec64.pth"  # every checkpoint message names the official files


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    """{'missing': no such file, 'junk': not a checkpoint, 'other': a torch state dict of some other model}."""
    torch = pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("bad_ckpt")
    (d / "junk.pth").write_bytes(b"<html>404: this download went wrong</html>")
    torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, d / "other.pth")
    return {"missing": d / "sam_vit_b_missing.pth", "junk": d / "junk.pth", "other": d / "other.pth"}


@pytest.mark.parametrize("kind, expect", [("missing", "does not exist"), ("junk", "not a readable PyTorch checkpoint"),
                                          ("other", "not a SAM checkpoint: none of its 2 keys")])
def test_bad_checkpoint_in_python(bad_checkpoints, kind, expect):
    with pytest.raises((FileNotFoundError, ValueError)) as e:
        infer.load(bad_checkpoints[kind])
    msg = str(e.value)
    assert expect in msg and OFFICIAL in msg and "\n" not in msg


def test_load_still_reads_checkpoints_once_the_text_detector_is_imported(bad_checkpoints):
    """Importing samjax.infer.detect (the OWL detector) binds that name on the samjax.infer package; load must not
    have been using the same name for the checkpoint detection it calls."""
    pytest.importorskip("samjax.infer.detect")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        infer.load(bad_checkpoints["missing"])


def test_missing_checkpoint_directory_says_how_to_convert(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m samjax.convert") as e:
        infer.load(tmp_path / "ckpt" / "sam_vit_h")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind, expect", [("missing", "does not exist"), ("junk", "not a readable PyTorch checkpoint"),
                                          ("other", "not a SAM checkpoint")])
def test_bad_checkpoint_on_the_command_lines(bad_checkpoints, kind, expect, tmp_path, capsys):
    ckpt = str(bad_checkpoints[kind])
    assert convert.main(["--checkpoint", ckpt, "--out", str(tmp_path / "o")]) == 2
    assert expect in one_error_line(capsys)
    assert demo.main(["--checkpoint", ckpt, "--out", str(tmp_path / "o")]) == 2
    assert expect in one_error_line(capsys)
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(SystemExit) as e:
        amg_cli.main(["--checkpoint", ckpt, "--input", str(image), "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and expect in one_error_line(capsys)
    assert not (tmp_path / "o").exists()  # nothing written before the checks


def test_missing_image(tmp_path, capsys):
    assert demo.main(["--image", str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "image" in (line := one_error_line(capsys)) and "cat.jpg' does not exist" in line
    with pytest.raises(SystemExit) as e:
        amg_cli.main(["--checkpoint", str(tmp_path), "--input", str(tmp_path / "photos"),
                      "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and "photos' does not exist: give an image file or a folder" in one_error_line(capsys)


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "model"), "--data", str(tmp_path / "*.tfrecord")]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_amg_command_line_prints_no_traceback(tmp_path):
    """The real `python -m samjax.amg` process: one line on stderr, exit status 2."""
    r = subprocess.run([sys.executable, "-m", "samjax.amg", "--checkpoint", str(tmp_path / "nope"), "--input",
                        str(tmp_path / "nope.jpg"), "--output", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error: --input") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# libtpu's wording, as users report it (the pid, the device node and the plugin message vary).
TPU_BUSY = [
    "Unable to initialize backend 'tpu': ABORTED: The TPU is already in use by process with pid 4242. "
    "Not attempting to load libtpu.so in this process.",
    "TPU initialization failed: open(/dev/accel0): Device or resource busy: Device or resource busy; "
    "Couldn't open device: /dev/accel0",
]


@pytest.mark.parametrize("text", TPU_BUSY)
def test_tpu_busy_message(text):
    line = runtime.accelerator_busy_message(text)
    assert "sudo lsof -w /dev/accel*" in line and "\n" not in line
    assert ("process 4242" in line and "`kill 4242`" in line) if "4242" in text else "another process" in line
    assert runtime.accelerator_busy_message("Unable to initialize backend 'cuda': no CUDA devices") is None


def _cli_calls(tmp_path):
    return {
        "convert": lambda: convert.main(["--checkpoint", str(tmp_path / "x.pth"), "--out", str(tmp_path / "o")]),
        "demo": lambda: demo.main(["--out", str(tmp_path / "o")]),
        "amg": lambda: amg_cli.main(["--checkpoint", "c", "--input", "i", "--output", str(tmp_path / "o")]),
        "train": lambda: train.main(["--experiment=tiny_synthetic", f"--workdir={tmp_path / 'w'}"]),
        "evaluate": lambda: evaluate.main(["--checkpoint", "c", "--data", "d"]),
    }


@pytest.mark.parametrize("cli", ["convert", "demo", "amg", "train", "evaluate"])
def test_tpu_in_use_is_one_line_in_every_cli(cli, monkeypatch, tmp_path, capsys):
    def busy(*args, **kwargs):
        raise RuntimeError(TPU_BUSY[0])

    monkeypatch.setattr(jax, "devices", busy)
    with pytest.raises(SystemExit) as e:
        _cli_calls(tmp_path)[cli]()
    assert e.value.code == 2
    line = one_error_line(capsys)
    assert "TPU is in use by process 4242" in line and "lsof" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_other_runtime_errors_are_not_swallowed(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unable to initialize backend 'cuda': CUDA_ERROR_NO_DEVICE")

    monkeypatch.setattr(jax, "devices", broken)
    with pytest.raises(RuntimeError, match="CUDA_ERROR_NO_DEVICE"):
        runtime.check_devices()


def test_describe_names_the_platform():
    line = runtime.describe()
    platform = jax.devices()[0].platform
    assert line.startswith(f"{platform.upper()}:") and jax.__version__ in line
    assert ("no accelerator" in line) == (platform == "cpu")

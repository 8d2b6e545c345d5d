"""Sam2VideoPredictor (samjax.infer.video) and `python -m samjax.video`.

Parity with the official SAM2VideoPredictor (sam2 1.1.0 without its CUDA extension, apply_postprocessing=False),
random weights through samjax's converter, a small sam2.1_hiera_t (5 Hiera blocks, 1 memory-attention layer) at
128: 8 synthetic JPEG frames, 2 objects (clicks on frame 0, a box on frame 2), forward propagation, a correction
click and a mask prompt mid-video, then reverse propagation; every returned mask logit within 1e-3 and the
binarised masks equal on >= 99.9% of pixels. The official stores memories in bfloat16; so does samjax.
Without the reference (tiny model): one compiled tracking step for a whole video, JPEG folder = array, state on
the host = on device, hole filling, bad input, and the command line.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from samjax import video as cli
from samjax.infer import sam2 as P
from samjax.infer import video as V
from samjax.models import sam2 as S
from samjax.weights import sam2 as W
from samjax.weights import store
from tests.sam2.tiny import TINY, stand_in_params


def synthetic_frames(num: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(num, h, w, 3) uint8: a disk and a square moving over a smooth textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = (80 + 40 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None] * rng.uniform(0.5, 1, 3))
    frames = []
    for t in range(num):
        f = base + rng.normal(0, 6, (h, w, 3))
        disk = (xx - (20 + 4 * t)) ** 2 + (yy - (30 + 2 * t)) ** 2 < 12 ** 2
        square = (abs(xx - (w - 30 - 3 * t)) < 10) & (abs(yy - (h - 30)) < 14)
        f[disk] = (230, 60, 40)
        f[square] = (40, 200, 90)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_jpegs(frames: np.ndarray, folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.jpg", quality=95)
    return str(folder)


# ------------------------------------------------------------------------------------------ parity ---
# sam2.1_hiera_t made small through its own hydra config: 5 Hiera blocks (a global one not at a stage change, where
# the official block cannot pool), one memory-attention layer, one fuser block; every other size (the SAM heads,
# widths, memory) as in the real model.
OFFICIAL_TINY = {"image_encoder.trunk.stages": "[1,1,2,1]", "image_encoder.trunk.global_att_blocks": "[3]",
                 "memory_attention.num_layers": 1, "memory_encoder.fuser.num_layers": 1}
SAMJAX_TINY = {"stages": (1, 1, 2, 1), "global_att_blocks": (3,), "memory_attention_layers": 1, "fuser_layers": 1}


def agree(ours, ref, what):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: {ours.shape} vs {ref.shape}"
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0, err_msg=what)
    same = np.mean((ours > 0) == (ref > 0))
    assert same >= 0.999, f"{what}: binarised masks agree on {same:.5f} of pixels"
    return ref


@pytest.mark.torch
def test_video_predictor_matches_official(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2.sam2_video_predictor")
    from tests.sam2.official_sam2 import (
        build_official_video_predictor,
        state_dict_numpy,
    )

    folder = write_jpegs(synthetic_frames(8, 96, 128), tmp_path / "frames")
    official = build_official_video_predictor("sam2.1_hiera_t", 128, seed=21, **OFFICIAL_TINY)
    clicks = {"points": np.array([[32.0, 40.0], [90.0, 20.0]], np.float32), "labels": np.array([1, 0], np.int32)}
    box = np.array([70.0, 50.0, 120.0, 90.0], np.float32)

    # Shift the object-score head so that both prompted objects are present on their frames (their scores >= 1):
    # tracking then moves between present and absent outputs, and both branches are compared.
    state = official.init_state(folder)
    official.add_new_points_or_box(state, 0, 1, **clicks)
    official.add_new_points_or_box(state, 2, 2, box=box)
    scores = [state["temp_output_dict_per_obj"][i]["cond_frame_outputs"][f]["object_score_logits"].item()
              for i, f in ((0, 0), (1, 2))]
    head = official.sam_mask_decoder.pred_obj_score_head.layers[-1]
    with torch.no_grad():
        head.bias += 1.0 - min(scores)
    official.reset_state(state)

    config = S.Sam2Config.from_name("sam2.1_hiera_t", image_size=128, **SAMJAX_TINY)
    ours = V.Sam2VideoPredictor(config, W.from_torch(state_dict_numpy(official), config))
    compiled = V._track._cache_size(), P.encode_backbone._cache_size()
    mine = ours.init_state(folder)

    refs = []
    for call, args, kwargs in (("add_new_points_or_box", (0, 1), clicks), ("add_new_points_or_box", (2, 2),
                                                                          {"box": box})):
        r = getattr(official, call)(state, *args, **kwargs)
        o = getattr(ours, call)(mine, *args, **kwargs)
        assert o[:2] == (r[0], list(r[1]))
        refs.append(agree(o[2], r[2], f"{call}{args}"))
    forward = list(zip(official.propagate_in_video(state), ours.propagate_in_video(mine, progress=False)))
    assert [o[0] for _, o in forward] == list(range(8))
    for r, o in forward:
        refs.append(agree(o[2], r[2], f"forward frame {o[0]}"))
    # mid-video: a correction click on a tracked frame (memory attention + previous logits), a mask prompt
    mask = np.zeros((96, 128), bool)
    mask[55:85, 75:115] = True
    for call, args, kwargs in (("add_new_points_or_box", (5, 1), {"points": [[45.0, 45.0], [20.0, 70.0]],
                                                                   "labels": [1, 0]}),
                               ("add_new_mask", (6, 2), {"mask": mask})):
        refs.append(agree(getattr(ours, call)(mine, *args, **kwargs)[2], getattr(official, call)(state, *args,
                                                                                                  **kwargs)[2],
                          f"{call}{args}"))
    backward = list(zip(official.propagate_in_video(state, start_frame_idx=7, reverse=True),
                        ours.propagate_in_video(mine, start_frame_idx=7, reverse=True, progress=False)))
    assert [o[0] for _, o in backward] == list(range(7, -1, -1))
    for r, o in backward:
        refs.append(agree(o[2], r[2], f"reverse frame {o[0]}"))

    logits = np.concatenate([r.reshape(-1, 96 * 128) for r in refs])
    present = logits.max(1) > 0
    assert present.sum() >= 8 and (logits.min(1) <= 0).all()  # masks with foreground and background
    assert (logits.max(1) == S.NO_OBJ_SCORE).any() or (~present).any()  # and absent objects
    # one compiled tracking step and one image encoder for the whole session, both directions
    assert V._track._cache_size() == compiled[0] + 1 and P.encode_backbone._cache_size() == compiled[1] + 1


# ------------------------------------------------------------------------------------ without reference ---

@pytest.fixture(scope="module")
def tiny():
    return V.Sam2VideoPredictor(TINY, stand_in_params(TINY)), synthetic_frames(6, 40, 52, seed=3)


def run_script(predictor, video, **state_kwargs):
    """Two objects, forward, a correction click, reverse: every returned mask."""
    state = predictor.init_state(video, **state_kwargs)
    out = [predictor.add_new_points_or_box(state, 0, 1, points=[[12, 15]], labels=[1])[2],
           predictor.add_new_points_or_box(state, 2, 3, box=[20, 10, 45, 35])[2]]
    out += [m for _, _, m in predictor.propagate_in_video(state, progress=False)]
    out.append(predictor.add_new_points_or_box(state, 3, 1, points=[[30, 20]], labels=[0])[2])
    out += [m for _, _, m in predictor.propagate_in_video(state, start_frame_idx=5, reverse=True, progress=False)]
    return out, state


def test_one_compiled_step_and_streamed_frames(tiny, tmp_path):
    """A whole video (forward, a correction, reverse) runs ONE compiled tracking step; a JPEG folder gives what
    its decoded array gives; outputs kept on the host give what device outputs give; frames are read on demand
    (at most two resized frames cached, nothing of the video on device)."""
    predictor, frames = tiny
    before = V._track._cache_size()
    from_array, state = run_script(predictor, frames)
    assert V._track._cache_size() == before + 1
    assert state.frames.frame.cache_info().currsize <= 2 and len(state.cached_features) == 1
    assert len(from_array) == 2 + 6 + 1 + 6 and all(m.shape[1:] == (1, 40, 52) for m in from_array)
    folder = write_jpegs(frames, tmp_path / "f")
    decoded = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "f").glob("*.jpg"))])
    from_folder, _ = run_script(predictor, folder)
    from_decoded, _ = run_script(predictor, decoded, offload_state_to_cpu=True)
    for a, b in zip(from_folder, from_decoded):
        np.testing.assert_array_equal(a, b)
    assert V._track._cache_size() == before + 1


def test_hole_filling(tiny):
    """fill_hole_area: no background component of at most that many low-res pixels is left in stored outputs."""
    predictor, frames = tiny
    filling = V.Sam2VideoPredictor(predictor.config, predictor.params, fill_hole_area=6)
    _, state = run_script(filling, frames)
    eight = np.ones((3, 3), bool)
    holes = 0
    for per_obj in state.outputs:
        for out in list(per_obj["cond"].values()) + list(per_obj["non_cond"].values()):
            labels, _ = ndimage.label(np.asarray(out.pred_masks)[0] <= 0, structure=eight)
            holes += int((np.bincount(labels.ravel())[1:] <= 6).sum())
    assert holes == 0


def test_bad_input_gets_clear_errors(tiny, tmp_path):
    predictor, frames = tiny
    with pytest.raises(TypeError, match="init_state"):
        predictor.add_new_points_or_box(None, 0, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError, match="frames of different sizes: frame 2 is 30x40"):
        predictor.init_state([frames[0], frames[1], frames[2, :40, :30]])
    folder = tmp_path / "mixed"
    write_jpegs(frames[:2], folder)
    Image.fromarray(frames[2, :20]).save(folder / "00002.jpg")
    with pytest.raises(ValueError, match="frames of different sizes: 00002.jpg is 52x20"):
        predictor.init_state(str(folder))
    with pytest.raises(FileNotFoundError, match="no folder"):
        predictor.init_state(str(tmp_path / "missing"))
    state = predictor.init_state(frames)
    with pytest.raises(RuntimeError, match="No input points or masks are provided for any object"):
        next(predictor.propagate_in_video(state))
    with pytest.raises(IndexError, match="frame_idx 6 is out of range: the video has 6 frames"):
        predictor.add_new_points_or_box(state, 6, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError, match="lie outside the 52x40"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[60, 1]], labels=[1])
    with pytest.raises(ValueError, match="points and labels must be provided together"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1]])
    with pytest.raises(KeyError, match="object id 4 was never prompted"):
        predictor.clear_all_prompts_in_frame(state, 0, 4)
    with pytest.raises(KeyError, match="Cannot remove object id 4"):
        predictor.remove_object(state, 4, strict=True)
    predictor.add_new_points_or_box(state, 0, 1, points=[[10, 10]], labels=[1])
    predictor.add_new_points_or_box(state, 1, 2, points=[[20, 10]], labels=[1])
    predictor.clear_all_prompts_in_frame(state, 1, 2)  # object 2 has no prompt left
    with pytest.raises(RuntimeError, match="No input points or masks are provided for object id 2"):
        next(predictor.propagate_in_video(state))
    assert predictor.remove_object(state, 2)[0] == [1]
    with pytest.raises(IndexError, match="start_frame_idx 9 is out of range"):
        next(predictor.propagate_in_video(state, start_frame_idx=9))
    assert [t for t, _, _ in predictor.propagate_in_video(state, progress=False)] == list(range(6))
    predictor.reset_state(state)
    assert state.obj_ids == [] and state.outputs == []


def test_command_line_writes_masks_and_gif(tiny, tmp_path, capsys):
    _, frames = tiny
    store.save_model(tmp_path / "model", stand_in_params(TINY), TINY)
    folder = write_jpegs(frames, tmp_path / "frames")
    args = ["--checkpoint", str(tmp_path / "model"), "--frames", folder, "--points", "12,15;30,20,0", "--frame", "2",
            "--out", str(tmp_path / "out"), "--no-postprocessing"]
    assert cli.main(args) == 0
    pngs = sorted((tmp_path / "out" / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(6)]  # forward from frame 2, then back to 0
    png = Image.open(pngs[0])
    assert png.mode == "P" and png.size == (52, 40) and set(np.unique(np.asarray(png))) <= {0, 1}
    gif = Image.open(tmp_path / "out" / "overlay.gif")
    assert gif.n_frames == 6 and gif.size == (52, 40)
    assert "6 frames: masks in" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", "x", "--frames", folder, "--out", "o"])  # no prompt
    with pytest.raises(SystemExit):
        cli.main(args + ["--box", "1,2,3"])
    assert cli.main([a if a != "2" else "9" for a in args]) == 2
    assert "frame_idx 9 is out of range" in capsys.readouterr().err

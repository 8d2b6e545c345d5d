"""Dry runs for TPU slices without a TPU: the training command's --aot and the serving dry run for Colab's chip.

Needs libtpu, which must stay out of the CPU test environment; run it in its own, e.g.

    python -m venv /tmp/tpuvenv && /tmp/tpuvenv/bin/pip install -e ".[tpu,dev]"
    JAX_PLATFORMS=cpu /tmp/tpuvenv/bin/python -m pytest -m tpu_aot tests/test_train_tpu_aot.py -s

The slice here is small (v5p:2x2x1, a shallow ViT-B at a small batch) so it compiles in minutes; make bench-tpu runs
the paper's recipes on v5p-128 and v5e-256.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.tpu_aot
pytest.importorskip("libtpu")

OVERRIDES = ["--config.data.batch_size=8", "--config.data.max_masks_per_image=8", "--config.model.encoder_depth=3",
             "--config.model.encoder_global_attn_indexes=(2,)", "--config.prompts.num_click_rounds=2",
             "--config.prompts.no_click_rounds=1"]


def test_training_dry_run_for_a_small_slice(capsys):
    """python -m samjax.train --aot: the fit rule's choice, per-chip memory under the chip's, the cost model's
    FLOPs (loops counted) near the analytic count plus what the chosen rung recomputes, one JSON line."""
    from samjax import train
    from samjax.training import config as training_config
    from samjax.training import fit, prompts

    code = train.main(["--experiment=sa1b_vitb", "--workdir=/nonexistent", "--aot=v5p:2x2x1", *OVERRIDES])
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and res["fits"] and res["chips"] == 4 and res["device_kind"] == "TPU v5"
    assert res["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert {"topology", "per_chip_bytes", "hbm_bytes", "compile_seconds", "model_flops_per_step",
            "modelled_step_seconds", "modelled_mfu"} <= set(res)
    assert 0 < res["per_chip_bytes"] <= 0.85 * res["hbm_bytes"] and 0 < res["modelled_mfu"] < 1
    assert "fit: mesh data=1 fsdp=4" in out and "modelled MFU" in out
    cfg = training_config.apply_overrides(training_config.load_experiment("sa1b_vitb"), OVERRIDES)
    rung = next(r for r in fit.ladder(cfg, 4) if r.describe() == res["rung"])
    mc = training_config.model_config(cfg)
    pc = prompts.PromptConfig(**cfg.prompts.to_dict())
    from samjax.training import metrics

    expected = metrics.train_flops_per_step(mc.replace(encoder_remat=False), 8, 8, pc.num_rounds, pc.num_tokens)
    expected += fit.recompute_flops(cfg, rung)
    assert 0.8 < res["loop_flops_per_chip"] * 4 / expected < 1.25, (res["loop_flops_per_chip"] * 4, expected)


def test_colab_chip_serves_vit_h():
    """The notebooks' serving paths on Colab's free TPU (one v5e chip, 16 GB): the ViT-H encoder at batch 1, the
    decoder on 64 prompts, the automatic mask generator's crop at 32x32 points, in bfloat16, with 15% kept free."""
    from samjax.amg import aot
    from samjax.models import SamConfig

    res = aot.dry_run(SamConfig.vit_h(dtype="bfloat16"), "v5e:1x1")
    assert res["fits"] and res["device_kind"] == "TPU v5 lite" and len(res["functions"]) == 3
    assert res["per_chip_bytes"] <= 0.85 * 16 * 2**30


def test_finetune_notebook_step_fits_colab_chip(capsys):
    """The fine-tune notebook's ViT-B training step at its batch (8 images x 16 masks, the paper's 8 click rounds,
    image encoder frozen) on one v5e chip."""
    from samjax import train

    code = train.main(["--experiment=finetune", "--workdir=/nonexistent", "--aot=v5e:1x1",
                       "--config.data.batch_size=8", "--config.data.max_masks_per_image=16",
                       "--config.optim.freeze_image_encoder=True"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and res["fits"] and res["per_chip_bytes"] <= 0.85 * 16 * 2**30

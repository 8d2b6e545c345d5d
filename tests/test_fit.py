"""The rule that fits a run to its chips (samjax.training.fit), without accelerators: fake devices, and a compile
function that answers with the footprint each rung would have."""

from __future__ import annotations

import dataclasses

import pytest

from samjax import train
from samjax.training import config as training_config
from samjax.training import fit


@dataclasses.dataclass
class FakeChip:
    device_kind: str
    limit: int | None = None

    def memory_stats(self):
        return {"bytes_limit": self.limit} if self.limit else None


GIB = 2 ** 30


def vith():
    return training_config.load_experiment("sa1b_vith")


def test_ladder_order_and_fixed_fields():
    cfg = vith()
    rungs = fit.ladder(cfg, 64)  # 256 images over 64 chips: 4 per chip
    # ViT-H: the rounds (one more decoder pass per mask and round) recompute less than the encoder blocks
    assert [r.describe() for r in rungs] == [
        "no remat", "remat prompt rounds", "remat encoder blocks", "remat encoder blocks + prompt rounds",
        "remat encoder blocks + prompt rounds, 2 microbatches", "remat encoder blocks + prompt rounds, 4 microbatches"]
    assert fit.recompute_flops(cfg, rungs[1]) < fit.recompute_flops(cfg, rungs[2])
    vitb = training_config.load_experiment("sa1b_vitb")  # ViT-B: the encoder is the cheaper one to recompute
    assert [r.describe() for r in fit.ladder(vitb, 64)][1:3] == ["remat encoder blocks", "remat prompt rounds"]
    cfg.fit.fixed = ("model.encoder_remat",)
    cfg.model.encoder_remat = False  # the user said: never rematerialise the encoder
    assert [r.describe() for r in fit.ladder(cfg, 64)] == [
        "no remat", "remat prompt rounds", "remat prompt rounds, 2 microbatches", "remat prompt rounds, 4 microbatches"]


def test_mesh_is_fsdp_over_every_chip_unless_fixed():
    cfg = vith()
    assert fit.mesh_shape(cfg, 64) == {"data": 1, "fsdp": 64, "tensor": 1}
    cfg.mesh.update(data=8, fsdp=-1)
    cfg.fit.fixed = ("mesh.data",)
    assert fit.mesh_shape(cfg, 64) == {"data": 8, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match="does not divide 60 devices"):
        fit.mesh_shape(cfg, 60)


def test_choose_takes_the_first_rung_that_fits_with_headroom():
    cfg = vith()
    chips = [FakeChip("TPU v5", 95 * GIB)] * 64
    asked = []

    footprint = {(False, False): 300, (False, True): 90, (True, False): 120, (True, True): 40}

    def compile_rung(run_cfg, mesh):  # the first three rungs over 85% of 95 GiB
        key = (run_cfg.model.encoder_remat, run_cfg.prompts.remat_rounds)
        asked.append((*key, run_cfg.train.grad_accum, mesh["fsdp"]))
        return object(), footprint[key] * GIB

    logged = []
    choice = fit.choose(cfg, chips, compile_rung, log=logged.append, workers=1)
    assert asked == [(False, False, 1, 64), (False, True, 1, 64), (True, False, 1, 64), (True, True, 1, 64)]
    assert choice.rung == fit.Rung(True, True, 1) and choice.per_chip_bytes == 40 * GIB and logged == choice.lines
    assert choice.config.model.encoder_remat and choice.config.prompts.remat_rounds
    # compiled two at a time (a host's cores): the same choice
    assert fit.choose(cfg, chips, compile_rung, workers=2).rung == choice.rung
    assert choice.config.mesh.fsdp == 64 and choice.config.mesh.data == 1
    assert any("over 80.8 GiB" in line for line in choice.lines) and any("fits" in line for line in choice.lines)
    # a compile the compiler refuses for memory (None) counts as not fitting; nothing fits -> a clear error
    with pytest.raises(ValueError, match="no rung of the ladder fits"):
        fit.choose(cfg, chips, lambda c, m: (None, 200 * GIB))


def test_errors_before_any_compile():
    cfg = vith()
    with pytest.raises(ValueError, match=r"256 images does not divide over 96 batch shards"):
        fit.check(cfg, 96, 95 * GIB)
    # a chip too small for even one image with everything rematerialised: names the smallest slice that fits
    # a chip too small for the state split over 64 chips but not over 128: names the smallest slice that fits
    chip = int((fit.lower_bound_bytes(cfg, 64, 64) + fit.lower_bound_bytes(cfg, 128, 128)) / 2 / 0.85)
    with pytest.raises(ValueError, match="the smallest TPU v5 it fits is 128 chips"):
        fit.check(cfg, 64, chip, "TPU v5")
    assert fit.check(cfg, 128, chip, "TPU v5") == {"data": 1, "fsdp": 128, "tensor": 1}
    assert fit.device_memory(FakeChip("TPU v5 lite")) == 16 * GIB  # by kind, when the runtime does not say
    assert fit.device_memory(FakeChip("NVIDIA H100 80GB HBM3", 79 * GIB)) == 79 * GIB


def test_command_line_overrides_are_kept_by_the_rule():
    named, cfg = train.parse(["--experiment=sa1b_vith", "--workdir=w", "--config.mesh.fsdp=8",
                              "--config.prompts.remat_rounds=True", "--config.optim.lr=1e-4", "--aot=v5p:4x4x4"])
    assert named["--aot"] == "v5p:4x4x4" and named["--workdir"] == "w"
    assert cfg.fit.fixed == ("mesh.fsdp", "prompts.remat_rounds") and cfg.optim.lr == 1e-4

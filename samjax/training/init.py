"""The parameters a training run starts from: from scratch (seeded), an official or samjax SAM checkpoint, an MAE
encoder, or the previous low-resolution stage's model with its position tables grown."""

from __future__ import annotations

import jax
import numpy as np

from samjax.models import SamConfig, init_params
from samjax.weights import mae, store
from samjax.weights import sam as sam_weights
from samjax.weights.pth import load_torch_checkpoint
from samjax.weights.resolution import grow_params


def initial_params(cfg, model_cfg: SamConfig) -> dict:
    """Host copy (numpy) of the initial parameters: from scratch (seeded; the same on every process), or loaded."""
    kind = cfg.init.kind
    if kind == "scratch":
        k_params = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
        params = jax.tree.map(np.asarray, init_params(model_cfg, k_params))
        return tie_decoder_qk(params, cfg.init.get("decoder_qk_gain", 0.0))
    if kind in ("sam", "mae"):
        return jax.tree.map(np.asarray, load_init_params(cfg, model_cfg))
    raise ValueError(f"config.init.kind must be scratch, sam or mae, got {kind!r}")


def tie_decoder_qk(params: dict, gain: float) -> dict:
    """From-scratch init option (gain > 0): every mask-decoder attention starts with k_proj = q_proj = sqrt(gain) x
    q_proj (biases zero), so q.k = gain x (x W)(y W)^T with W W^T ~ a scaled identity: the point's Fourier PE matches
    the image PE of its own cell from step 0 instead of after hundreds of steps of learning W_q^T W_k. Same modules
    and parameter names (only the initial values change); gain 0 leaves the init untouched."""
    if not gain:
        return params
    params = jax.tree.map(lambda x: x, params)  # new containers: the caller's tree is left as it was
    scale = float(np.sqrt(gain))

    def visit(tree):
        for name, sub in tree.items():
            if not isinstance(sub, dict):
                continue
            if "q_proj" in sub and "k_proj" in sub:
                w = np.asarray(sub["q_proj"]["kernel"]) * scale
                sub["q_proj"] = dict(sub["q_proj"], kernel=w)
                sub["k_proj"] = dict(sub["k_proj"], kernel=w.copy())
            else:
                visit(sub)

    visit(params["mask_decoder"])
    return params


def load_init_params(cfg, model_cfg: SamConfig) -> dict:
    path = cfg.init.path
    if not path:
        raise ValueError(f"config.init.kind={cfg.init.kind!r} needs --config.init.path=... (a samjax model dir, an "
                         "official SAM .pth, or for mae an official MAE .pth)")
    if cfg.init.kind == "mae":
        return mae.init_from_mae(path, model_cfg, jax.random.PRNGKey(cfg.seed))
    if str(path).endswith((".pth", ".pt")):
        return sam_weights.from_torch(load_torch_checkpoint(path), model_cfg)
    _, params = store.load_model(path)
    return params


def grown_low_res_params(low_res: dict, model_cfg: SamConfig) -> dict:
    """The low-resolution stage's exported parameters with their position tables resampled to model_cfg's size."""
    src_cfg, params = store.load_model(low_res["model_dir"])
    return grow_params(params, src_cfg, model_cfg)

"""A tiny SAM 2 for tests that need no reference: every module present, widths of a few channels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samjax.models import sam2 as S

TINY = S.Sam2Config(image_size=64, embed_dim=8, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(2,),
                    window_pos_embed_bkg_spatial_size=(4, 4), window_spec=(4, 2, 2, 2), d_model=32, mem_dim=8,
                    memory_attention_layers=1, memory_attention_mlp_dim=32, decoder_num_heads=2, decoder_mlp_dim=32,
                    iou_head_hidden_dim=16, iou_head_depth=2, decoder_depth=1, mask_in_chans=4, num_maskmem=3,
                    max_obj_ptrs_in_encoder=4, fuser_layers=1)


def stand_in_params(config, scale=0.2, seed=0):
    """Random values in the parameters' shapes (no compiled init: it is slow for ~500 parameters)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                        S.abstract_params(config))

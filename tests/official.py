"""The official segment-anything package for parity tests, and official models with random weights.

`import_official()` loads segment_anything; PyPI's torchvision does not load beside the CPU torch wheel, so
when the real torchvision cannot be imported the labelled stand-in in tests/standins/ is put on sys.path.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np

from samjax.models import SamConfig

STANDINS = Path(__file__).parent / "standins"


def put_standins_on_path() -> None:
    """Puts tests/standins first on sys.path. transformers decides once per process (lru_cache) whether torchvision
    is installed, by looking for it on sys.path; it must decide before the stand-in is there, or its image
    utilities import torchvision names that only the real package has."""
    try:
        from transformers.utils.import_utils import is_torchvision_available
    except ImportError:
        pass
    else:
        is_torchvision_available()
    if str(STANDINS) not in sys.path:
        sys.path.insert(0, str(STANDINS))


def import_official():
    import torch

    try:
        import torchvision.ops.boxes
        import torchvision.transforms.functional
    except Exception:
        for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[name]
        put_standins_on_path()
        import torchvision

        assert getattr(torchvision, "STANDIN", False)
    import segment_anything

    return torch, segment_anything


def randomize_(sam, seed: int) -> None:
    """Random weights everywhere (the official init leaves pos_embed, rel_pos and norms trivial)."""
    torch, _ = import_official()
    from segment_anything.modeling.common import LayerNorm2d

    gen = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(mean + std * torch.randn(t.shape, generator=gen))

    with torch.no_grad():
        for m in sam.modules():
            if isinstance(m, (torch.nn.LayerNorm, LayerNorm2d)):
                normal(m.weight, 0.1, 1.0)
                normal(m.bias, 0.1)
            elif isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                normal(m.weight, (m.weight.numel() / m.weight.shape[0]) ** -0.5)
                if m.bias is not None:
                    normal(m.bias, 0.1)
        for name, p in sam.named_parameters():
            if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                normal(p, 0.1)


def build_official(cfg: SamConfig, seed: int = 0):
    """An official `Sam` built from `cfg` with the official constructors, random weights, eval mode."""
    torch, _ = import_official()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    g = cfg.grid_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=cfg.image_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=cfg.encoder_embed_dim,
            depth=cfg.encoder_depth, num_heads=cfg.encoder_num_heads, mlp_ratio=cfg.encoder_mlp_ratio,
            out_chans=cfg.prompt_embed_dim, qkv_bias=cfg.encoder_qkv_bias,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_abs_pos=cfg.encoder_use_abs_pos,
            use_rel_pos=cfg.encoder_use_rel_pos, window_size=cfg.window_size,
            global_attn_indexes=cfg.encoder_global_attn_indexes),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim, image_embedding_size=(g, g),
            input_image_size=(cfg.image_size, cfg.image_size), mask_in_chans=cfg.mask_in_chans),
        mask_decoder=MaskDecoder(
            transformer_dim=cfg.prompt_embed_dim, num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim, num_heads=cfg.decoder_num_heads,
                mlp_dim=cfg.decoder_mlp_dim, attention_downsample_rate=cfg.attention_downsample_rate),
            iou_head_depth=cfg.iou_head_depth, iou_head_hidden_dim=cfg.iou_head_hidden_dim),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    )
    randomize_(sam, seed)
    return sam.eval()


def state_dict_numpy(sam) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in sam.state_dict().items()}

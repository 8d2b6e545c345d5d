"""The official `sam2` package (1.1.0, no CUDA extension) for parity tests: models built from its own hydra
configs, every weight and buffer random, eval mode.

sam2's modeling code imports neither torchvision nor its `_C` extension; `build_sam2(..., apply_postprocessing=
False)` keeps the mask decoder's dynamic multimask off (tests turn it on by attribute where they need it).
"""

from __future__ import annotations

import numpy as np

SAM2_CONFIG_FILES = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}


def build_official_sam2(name: str, image_size: int = 1024, seed: int = 0):
    """SAM2Base from the official yaml `name` at `image_size`, all weights random (see `randomize_`), eval mode."""
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(SAM2_CONFIG_FILES[name], None, device="cpu", apply_postprocessing=False,
                       hydra_overrides_extra=[f"++model.image_size={image_size}"])
    randomize_(model, seed)
    return model.eval()


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The official state_dict keys and shapes of preset `name`, built on the meta device (no memory, no init).
    Hiera's constructor reads `torch.linspace(...).item()`, which meta tensors cannot: linspace stays on the CPU."""
    from unittest import mock

    import sam2.build_sam  # noqa: F401 - initialises hydra's config module
    import torch
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(config_name=SAM2_CONFIG_FILES[name])
    OmegaConf.resolve(cfg)
    linspace = torch.linspace
    with torch.device("meta"), mock.patch.object(torch, "linspace",
                                                 lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})):
        model = instantiate(cfg.model, _recursive_=True)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def randomize_(model, seed: int) -> None:
    """Random values in every parameter and buffer of an official SAM 2 (its init leaves norms at 1 / 0, position
    tables, memory and no-object embeddings at (near) zero and layer scales at 1e-6). Raises if one is missed."""
    import torch
    from sam2.modeling.sam2_utils import LayerNorm2d

    gen = torch.Generator().manual_seed(seed)
    done = set()

    def normal(name, t, std, mean=0.0):
        t.copy_(mean + std * torch.randn(t.shape, generator=gen))
        done.add(name)

    with torch.no_grad():
        for mname, m in model.named_modules():
            prefix = f"{mname}." if mname else ""
            if isinstance(m, (torch.nn.LayerNorm, LayerNorm2d)):
                normal(prefix + "weight", m.weight, 0.1, 1.0)
                normal(prefix + "bias", m.bias, 0.1)
            elif isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if not isinstance(m, torch.nn.ConvTranspose2d) else m.weight.shape[0]
                normal(prefix + "weight", m.weight, fan_in ** -0.5)
                if m.bias is not None:
                    normal(prefix + "bias", m.bias, 0.1)
            elif isinstance(m, torch.nn.Embedding):
                normal(prefix + "weight", m.weight, 1.0)
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if name in done:
                continue
            if name.endswith("gamma"):  # CXBlock layer scale
                normal(name, p, 0.1, 0.5)
            elif name.endswith("positional_encoding_gaussian_matrix"):
                normal(name, p, 1.0)
            else:  # position tables, maskmem_tpos_enc, no_mem_*, no_obj_*
                normal(name, p, 0.5)
    missed = set(model.state_dict()) - done
    assert not missed, f"not randomised: {sorted(missed)}"


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def import_image_predictor():
    """sam2's SAM2ImagePredictor. Its SAM2Transforms imports torchvision.transforms (Resize, Normalize, ToTensor);
    where the real torchvision cannot load, the labelled stand-in in tests/standins/ is put on sys.path first."""
    from tests.official import import_official

    import_official()  # torchvision, or the stand-in
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor


def official_image_predictor(model):
    """SAM2ImagePredictor(model) whose feature sizes follow the model's image size (officially fixed to 1024's
    (256, 128, 64)), and which records the object score logits its mask decoder computes (`predict` drops them)."""
    predictor = import_image_predictor()(model)
    g = model.image_size // 16
    predictor._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
    decoder = model.sam_mask_decoder
    forward = type(decoder).forward
    predictor.object_scores = []

    def recording(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        predictor.object_scores.append(out[3].detach().numpy())
        return out

    decoder.forward = recording.__get__(decoder)
    return predictor


def build_official_video_predictor(name: str, image_size: int, seed: int = 0, **overrides):
    """SAM2VideoPredictor from the official yaml `name` at `image_size` (apply_postprocessing=False: no dynamic
    multimask, no binarised click masks, no hole filling, which needs the CUDA extension), every weight random."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    extra = [f"++model.image_size={image_size}"] + [f"++model.{k}={v}" for k, v in overrides.items()]
    model = build_sam2_video_predictor(SAM2_CONFIG_FILES[name], None, device="cpu", apply_postprocessing=False,
                                       hydra_overrides_extra=extra)
    randomize_(model, seed)
    # The predictor stores memories in bfloat16 and concatenates them with the float32 object pointers, which
    # torch.cat promotes to float32. When an object has no pointer yet (tracked before its prompted frame, or in
    # reverse from the last frame), the memory stays bfloat16 and, without CUDA autocast, the float32 layers of
    # memory attention raise. Cast it as the promotion would: bfloat16-rounded memories, float32 compute.
    attention = model.memory_attention
    forward = type(attention).forward

    def float32_memory(self, curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return forward(self, curr, memory.float(), curr_pos, memory_pos, num_obj_ptr_tokens)

    attention.forward = float32_memory.__get__(attention)
    return model.eval()

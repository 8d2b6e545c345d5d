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

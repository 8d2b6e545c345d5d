"""ClipConfig: every ViT CLIP (OpenAI `clip`, Hugging Face `CLIPModel`, the towers inside OWL-ViT) in one frozen
dataclass.

Fields are the sizes both references are built from: OpenAI's `clip.model.CLIP(embed_dim, image_resolution,
vision_layers, vision_width, vision_patch_size, context_length, vocab_size, transformer_width, transformer_heads,
transformer_layers)` (which fixes vision heads = width / 64, MLP = 4 x width, QuickGELU, LayerNorm eps 1e-5), and
Hugging Face's `CLIPConfig` (text_config / vision_config: hidden_size, intermediate_size, num_hidden_layers,
num_attention_heads, max_position_embeddings, image_size, patch_size, hidden_act, layer_norm_eps, eos_token_id;
projection_dim, logit_scale_init_value). `from_hf_config` reads a checkpoint's config.json with the defaults of its
model type; the presets are OpenAI's released ViT models.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp

# CLIP's image normalisation (clip.clip._transform; HF CLIPImageProcessor and OWL-ViT's processors use the same).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ACTIVATIONS = ("quick_gelu", "gelu", "gelu_tanh")
# Hugging Face `hidden_act` spellings -> ours (ACT2FN: "gelu" is the exact erf form; "gelu_new" and
# "gelu_pytorch_tanh" the tanh approximation).
_HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                   "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Hugging Face defaults by model type (transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig and the OWL-ViT
# and OWLv2 ones): a saved config.json leaves out every field equal to its class default.
HF_DEFAULTS = {
    "clip": dict(text=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                           num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                           layer_norm_eps=1e-5, eos_token_id=49407),
                 vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                             layer_norm_eps=1e-5),
                 projection_dim=512, logit_scale_init_value=2.6592),
    "owlvit": dict(text=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                             num_attention_heads=8, max_position_embeddings=16, hidden_act="quick_gelu",
                             layer_norm_eps=1e-5, eos_token_id=49407),
                   vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               num_channels=3, image_size=768, patch_size=32, hidden_act="quick_gelu",
                               layer_norm_eps=1e-5),
                   projection_dim=512, logit_scale_init_value=2.6592),
}
HF_DEFAULTS["owlv2"] = {**HF_DEFAULTS["owlvit"], "vision": {**HF_DEFAULTS["owlvit"]["vision"], "patch_size": 16}}


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    # Joint image-text embedding (OpenAI embed_dim, HF projection_dim) and the initial log temperature.
    embed_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)
    # Text tower.
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    text_mlp_dim: int = 2048
    text_act: str = "quick_gelu"
    text_layer_norm_eps: float = 1e-5
    # Which token's output is the text embedding: None = the position of the largest id (OpenAI `text.argmax()`,
    # HF with the legacy eos_token_id 2, OWL-ViT), an id = the first position holding it (HF since PR #24773).
    # They agree wherever the end-of-text token is the largest id and comes first, as CLIP's tokenizer makes it.
    eos_token_id: int | None = None
    # Vision tower (ViT with a class token, pre- and post-LayerNorm).
    image_size: int = 224
    patch_size: int = 32
    in_chans: int = 3
    vision_width: int = 768
    vision_heads: int = 12
    vision_layers: int = 12
    vision_mlp_dim: int = 3072
    vision_act: str = "quick_gelu"
    vision_layer_norm_eps: float = 1e-5
    # Image normalisation of the pixels the vision tower expects (applied by the caller, see `normalize`).
    pixel_mean: tuple[float, float, float] = CLIP_MEAN
    pixel_std: tuple[float, float, float] = CLIP_STD
    # Compute dtype of activations and matmuls; parameters stay float32.
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        problems = []
        for tower in ("text", "vision"):
            width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if heads < 1 or width % heads:
                problems.append(f"{tower}_width ({width}) must divide by {tower}_heads ({heads}) >= 1")
            if getattr(self, f"{tower}_act") not in ACTIVATIONS:
                problems.append(f"{tower}_act must be one of {ACTIVATIONS}, got {getattr(self, f'{tower}_act')!r}")
            for name in (f"{tower}_layers", f"{tower}_mlp_dim"):
                if getattr(self, name) < 1:
                    problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            problems.append(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.context_length < 2 or self.vocab_size < 2 or self.embed_dim < 1:
            problems.append("context_length and vocab_size must be >= 2 and embed_dim >= 1")
        if self.eos_token_id is not None and not 0 <= self.eos_token_id < self.vocab_size:
            problems.append(f"eos_token_id ({self.eos_token_id}) must be None or an id below vocab_size "
                            f"({self.vocab_size})")
        if len(self.pixel_mean) != self.in_chans or len(self.pixel_std) != self.in_chans:
            problems.append(f"pixel_mean and pixel_std need in_chans ({self.in_chans}) values")
        if self.dtype not in _DTYPES:
            problems.append(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if problems:
            raise ValueError("invalid ClipConfig: " + "; ".join(problems))

    # ----- presets: OpenAI's released ViT models (clip.model.build_model of their state dicts) -----
    @classmethod
    def vit_b32(cls, **overrides) -> ClipConfig:
        return cls(**{**dict(embed_dim=512, text_width=512, text_heads=8, text_mlp_dim=2048, image_size=224,
                             patch_size=32, vision_width=768, vision_heads=12, vision_layers=12, vision_mlp_dim=3072),
                      **overrides})

    @classmethod
    def vit_b16(cls, **overrides) -> ClipConfig:
        return cls.vit_b32(**{"patch_size": 16, **overrides})

    @classmethod
    def vit_l14(cls, **overrides) -> ClipConfig:
        return cls(**{**dict(embed_dim=768, text_width=768, text_heads=12, text_mlp_dim=3072, image_size=224,
                             patch_size=14, vision_width=1024, vision_heads=16, vision_layers=24, vision_mlp_dim=4096),
                      **overrides})

    @classmethod
    def vit_l14_336(cls, **overrides) -> ClipConfig:
        return cls.vit_l14(**{"image_size": 336, **overrides})

    @classmethod
    def from_name(cls, name: str, **overrides) -> ClipConfig:
        """"ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px" (OpenAI's names) or vit_b32 / vit_b16 / vit_l14 /
        vit_l14_336."""
        presets = {"vit_b32": cls.vit_b32, "vit_b16": cls.vit_b16, "vit_l14": cls.vit_l14,
                   "vit_l14_336": cls.vit_l14_336}
        key = name.lower().replace("@336px", "_336").replace("-", "_").replace("/", "")
        if key not in presets:
            raise ValueError(f"unknown CLIP model {name!r}; expected one of ViT-B/32, ViT-B/16, ViT-L/14, "
                             f"ViT-L/14@336px ({sorted(presets)})")
        return presets[key](**overrides)

    @classmethod
    def openai(cls, *, embed_dim: int, image_resolution: int, vision_layers: int, vision_width: int,
               vision_patch_size: int, context_length: int, vocab_size: int, transformer_width: int,
               transformer_heads: int, transformer_layers: int, **overrides) -> ClipConfig:
        """The config of `clip.model.CLIP(...)` with these constructor arguments (ViT image towers only)."""
        if isinstance(vision_layers, (tuple, list)):
            raise ValueError("ResNet CLIP image towers (RN50, RN101, ...) are not supported; use a ViT CLIP")
        return cls(**{**dict(
            embed_dim=embed_dim, image_size=image_resolution, vision_layers=vision_layers, vision_width=vision_width,
            vision_heads=max(vision_width // 64, 1), vision_mlp_dim=4 * vision_width, patch_size=vision_patch_size,
            context_length=context_length, vocab_size=vocab_size, text_width=transformer_width,
            text_heads=transformer_heads, text_layers=transformer_layers, text_mlp_dim=4 * transformer_width),
            **overrides})

    @classmethod
    def from_hf_config(cls, config: dict | str | Path, **overrides) -> ClipConfig:
        """A Hugging Face `CLIPConfig` / `OwlViTConfig` / `Owlv2Config` (a config.json path or its dict). Fields a
        saved config leaves out take the class defaults of its `model_type`."""
        if not isinstance(config, dict):
            config = json.loads(Path(config).read_text())
        model_type = config.get("model_type", "clip")
        if model_type not in HF_DEFAULTS:
            raise ValueError(f"config.json has model_type {model_type!r}; expected one of {sorted(HF_DEFAULTS)}")
        defaults = HF_DEFAULTS[model_type]
        text = {**defaults["text"], **(config.get("text_config") or config.get("text_config_dict") or {})}
        vision = {**defaults["vision"], **(config.get("vision_config") or config.get("vision_config_dict") or {})}
        for tower, d in (("text", text), ("vision", vision)):
            if d["hidden_act"] not in _HF_ACTIVATIONS:
                raise ValueError(f"{tower}_config.hidden_act {d['hidden_act']!r} is not supported; expected one of "
                                 f"{sorted(_HF_ACTIVATIONS)}")
        for key in ("image_size", "patch_size"):
            if isinstance(vision[key], (list, tuple)):
                if len(set(vision[key])) != 1:
                    raise ValueError(f"vision_config.{key} {vision[key]} is not square; only square sizes are "
                                     "supported")
                vision[key] = vision[key][0]
        eos = text.get("eos_token_id")
        if isinstance(eos, (list, tuple)):
            eos = eos[0]
        # HF pools at the largest id for the legacy eos_token_id 2 (CLIPTextTransformer), and always for OWL-ViT/v2.
        pooling_eos = None if (model_type != "clip" or eos in (None, 2)) else int(eos)
        return cls(**{**dict(
            embed_dim=config.get("projection_dim", defaults["projection_dim"]),
            logit_scale_init=config.get("logit_scale_init_value", defaults["logit_scale_init_value"]),
            context_length=text["max_position_embeddings"], vocab_size=text["vocab_size"],
            text_width=text["hidden_size"], text_heads=text["num_attention_heads"],
            text_layers=text["num_hidden_layers"], text_mlp_dim=text["intermediate_size"],
            text_act=_HF_ACTIVATIONS[text["hidden_act"]], text_layer_norm_eps=text["layer_norm_eps"],
            eos_token_id=pooling_eos, image_size=vision["image_size"], patch_size=vision["patch_size"],
            in_chans=vision["num_channels"], vision_width=vision["hidden_size"],
            vision_heads=vision["num_attention_heads"], vision_layers=vision["num_hidden_layers"],
            vision_mlp_dim=vision["intermediate_size"], vision_act=_HF_ACTIVATIONS[vision["hidden_act"]],
            vision_layer_norm_eps=vision["layer_norm_eps"]), **overrides})

    def to_hf_config(self, model_type: str = "clip") -> dict:
        """The Hugging Face config.json of this model as `model_type` ("clip", "owlvit" or "owlv2"), every size
        written out: `from_hf_config` reads it back to an equal config. Not represented (HF keeps them elsewhere or
        not at all): pixel_mean / pixel_std (its preprocessor_config.json) and the compute dtype."""
        if model_type not in HF_DEFAULTS:
            raise ValueError(f"model_type must be one of {sorted(HF_DEFAULTS)}, got {model_type!r}")
        to_hf = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
        text = dict(vocab_size=self.vocab_size, hidden_size=self.text_width, intermediate_size=self.text_mlp_dim,
                    num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                    max_position_embeddings=self.context_length, hidden_act=to_hf[self.text_act],
                    layer_norm_eps=self.text_layer_norm_eps)
        if model_type == "clip":  # HF pools at the largest id for the legacy id 2, else at the first eos_token_id
            text["eos_token_id"] = 2 if self.eos_token_id is None else self.eos_token_id
        elif self.eos_token_id is not None:
            raise ValueError(f"{model_type} pools text at the largest token id: eos_token_id must be None")
        vision = dict(hidden_size=self.vision_width, intermediate_size=self.vision_mlp_dim,
                      num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                      num_channels=self.in_chans, image_size=self.image_size, patch_size=self.patch_size,
                      hidden_act=to_hf[self.vision_act], layer_norm_eps=self.vision_layer_norm_eps)
        return {"model_type": model_type, "text_config": text, "vision_config": vision,
                "projection_dim": self.embed_dim, "logit_scale_init_value": self.logit_scale_init}

    # ----- derived sizes -----
    @property
    def grid_size(self) -> int:
        """Side of the patch grid (7 for ViT-B/32 at 224)."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """Vision tokens: the class token and grid_size^2 patches."""
        return self.grid_size ** 2 + 1

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    def replace(self, **changes: Any) -> ClipConfig:
        return dataclasses.replace(self, **changes)

    # ----- serialisation (written beside converted checkpoints) -----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> ClipConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ClipConfig fields {unknown}")
        return cls(**d)

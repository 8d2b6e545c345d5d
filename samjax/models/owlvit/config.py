"""OwlViTConfig: OWL-ViT (version 1) and OWLv2 (version 2), a CLIP backbone plus detection heads.

The heads' sizes follow from the backbone (Hugging Face OwlViTForObjectDetection / Owlv2ForObjectDetection): the
box and objectness heads are width -> width -> width -> 4 (1) MLPs over the vision width, the class head projects
patch features to the text width, which must equal the joint embedding (`projection_dim`) its queries live in.
Presets are the released Hugging Face checkpoints' sizes (google/owlvit-base-patch32, -base-patch16,
-large-patch14; google/owlv2-base-patch16(-ensemble), -large-patch14(-ensemble)).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from samjax.models.clip.config import ClipConfig

VERSIONS = {1: "owlvit", 2: "owlv2"}  # version -> HF model_type and the backbone's state_dict prefix
OWL_CONTEXT = 16  # OWL-ViT's text queries are 16 tokens (HF OwlViTTextConfig.max_position_embeddings)


@dataclasses.dataclass(frozen=True)
class OwlViTConfig:
    clip: ClipConfig = dataclasses.field(
        default_factory=lambda: ClipConfig.vit_b32(image_size=768, context_length=OWL_CONTEXT))
    version: int = 1

    def __post_init__(self):
        if isinstance(self.clip, dict):
            object.__setattr__(self, "clip", ClipConfig.from_dict(self.clip))
        problems = []
        if self.version not in VERSIONS:
            problems.append(f"version must be 1 (OWL-ViT) or 2 (OWLv2), got {self.version!r}")
        if self.clip.text_width != self.clip.embed_dim:
            problems.append(f"the class head compares patch embeddings of the text width ({self.clip.text_width}) "
                            f"with text queries of the joint width ({self.clip.embed_dim}): they must be equal")
        if self.clip.eos_token_id is not None:
            problems.append("OWL-ViT pools text at the largest token id: clip.eos_token_id must be None")
        if problems:
            raise ValueError("invalid OwlViTConfig: " + "; ".join(problems))

    # ----- presets -----
    @classmethod
    def owlvit_b32(cls, **clip_overrides) -> OwlViTConfig:
        return cls(ClipConfig.vit_b32(**{"image_size": 768, "context_length": OWL_CONTEXT, **clip_overrides}), 1)

    @classmethod
    def owlvit_b16(cls, **clip_overrides) -> OwlViTConfig:
        return cls(ClipConfig.vit_b16(**{"image_size": 768, "context_length": OWL_CONTEXT, **clip_overrides}), 1)

    @classmethod
    def owlvit_l14(cls, **clip_overrides) -> OwlViTConfig:
        return cls(ClipConfig.vit_l14(**{"image_size": 840, "context_length": OWL_CONTEXT, **clip_overrides}), 1)

    @classmethod
    def owlv2_b16(cls, **clip_overrides) -> OwlViTConfig:
        return cls(ClipConfig.vit_b16(**{"image_size": 960, "context_length": OWL_CONTEXT, **clip_overrides}), 2)

    @classmethod
    def owlv2_l14(cls, **clip_overrides) -> OwlViTConfig:
        return cls(ClipConfig.vit_l14(**{"image_size": 1008, "context_length": OWL_CONTEXT, **clip_overrides}), 2)

    @classmethod
    def from_name(cls, name: str, **clip_overrides) -> OwlViTConfig:
        presets = {"owlvit_b32": cls.owlvit_b32, "owlvit_b16": cls.owlvit_b16, "owlvit_l14": cls.owlvit_l14,
                   "owlv2_b16": cls.owlv2_b16, "owlv2_l14": cls.owlv2_l14}
        if name not in presets:
            raise ValueError(f"unknown OWL model {name!r}; expected one of {sorted(presets)}")
        return presets[name](**clip_overrides)

    @classmethod
    def from_hf_config(cls, config: dict | str | Path) -> OwlViTConfig:
        """A Hugging Face OwlViTConfig / Owlv2Config (config.json path or dict)."""
        if not isinstance(config, dict):
            config = json.loads(Path(config).read_text())
        model_type = config.get("model_type")
        versions = {v: k for k, v in VERSIONS.items()}
        if model_type not in versions:
            raise ValueError(f"not an OWL-ViT / OWLv2 config: model_type is {model_type!r}, expected 'owlvit' or "
                             "'owlv2' (a google/owlvit-* or google/owlv2-* checkpoint)")
        return cls(ClipConfig.from_hf_config(config), versions[model_type])

    def to_hf_config(self) -> dict:
        """The Hugging Face config.json of this detector (model_type "owlvit" / "owlv2"); `from_hf_config` reads it
        back to an equal config (pixel normalisation and compute dtype aside: see ClipConfig.to_hf_config)."""
        return self.clip.to_hf_config(self.model_type)

    # ----- derived -----
    @property
    def model_type(self) -> str:
        """"owlvit" or "owlv2": the HF model_type and the backbone's parameter / state_dict prefix."""
        return VERSIONS[self.version]

    @property
    def grid_size(self) -> int:
        return self.clip.grid_size

    @property
    def num_patches(self) -> int:
        """Predictions per image: one box (and class logits per query) per patch."""
        return self.clip.grid_size ** 2

    def replace(self, **changes: Any) -> OwlViTConfig:
        return dataclasses.replace(self, **changes)

    # ----- serialisation -----
    def to_dict(self) -> dict:
        return {"clip": self.clip.to_dict(), "version": self.version}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> OwlViTConfig:
        unknown = sorted(set(d) - {"clip", "version"})
        if unknown:
            raise ValueError(f"unknown OwlViTConfig fields {unknown}")
        return cls(ClipConfig.from_dict(d["clip"]) if "clip" in d else OwlViTConfig().clip, d.get("version", 1))

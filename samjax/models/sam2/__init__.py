"""SAM 2 (Hiera image encoder, FPN neck, SAM heads with object scores, memory encoder, memory attention) in Flax.

Official: github.com/facebookresearch/sam2 (sam2/modeling). See `sam2.py` for the pure functions the predictors
call and `memory_bank.py` for the fixed-size memory of the video path.
"""

from samjax.models.sam2.config import PRESETS, Sam2Config
from samjax.models.sam2.memory_bank import (
    MemoryBank,
    MemoryPlan,
    empty_memory,
    gather_memory,
    memory_capacity,
    plan_memory,
)
from samjax.models.sam2.sam2 import (
    NO_OBJ_SCORE,
    Sam2,
    abstract_params,
    encode_new_memory,
    forward_image,
    forward_sam_heads,
    image_embeddings,
    init_params,
    param_logical_axes,
    predict,
    prepare_memory_conditioned_features,
    track_step,
    use_mask_as_output,
    use_multimask,
)

__all__ = [
    "NO_OBJ_SCORE",
    "PRESETS",
    "MemoryBank",
    "MemoryPlan",
    "Sam2",
    "Sam2Config",
    "abstract_params",
    "empty_memory",
    "encode_new_memory",
    "forward_image",
    "forward_sam_heads",
    "gather_memory",
    "image_embeddings",
    "init_params",
    "memory_capacity",
    "param_logical_axes",
    "plan_memory",
    "predict",
    "prepare_memory_conditioned_features",
    "track_step",
    "use_mask_as_output",
    "use_multimask",
]

"""Training and serving see the same model input for the same image: the data pipeline's example and the
Predictor's preparation are byte-identical (one implementation, samjax.transforms), and both normalise with the same
function."""

from __future__ import annotations

import io
import json

import jax.numpy as jnp
import numpy as np
from PIL import Image

from samjax import transforms as T
from samjax.data.example import decode_record, encode_record
from samjax.data.preprocess import process_record
from samjax.data.sa1b_format import parse_sample
from samjax.data.synthetic import make_sample
from samjax.infer.families import family_for
from samjax.models import SamConfig

CFG = SamConfig(image_size=64, patch_size=8, encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=2,
                window_size=0, encoder_global_attn_indexes=(), prompt_embed_dim=32, mask_in_chans=8)


def test_pipeline_and_predictor_make_the_same_model_input():
    for h, w in ((96, 128), (128, 80), (64, 64), (37, 101)):
        jpeg, doc = make_sample(5, 1, h, w)
        rec = decode_record(encode_record(parse_sample(jpeg, json.dumps(doc).encode(), "sa_1")))
        example = process_record(rec, image_size=CFG.image_size)
        image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))  # what a user hands the Predictor
        padded, encoder_hw, input_size, original = family_for(CFG).prepare(image)
        assert padded.dtype == example["image"].dtype == np.uint8
        np.testing.assert_array_equal(padded, example["image"])
        assert tuple(example["input_hw"]) == encoder_hw == input_size and original == (h, w)
        # the normalisation both feed the encoder: one function, so one result
        a = T.normalize(jnp.asarray(padded[None]), jnp.asarray([encoder_hw]), CFG.pixel_mean, CFG.pixel_std)
        b = T.normalize(jnp.asarray(example["image"][None]), jnp.asarray(example["input_hw"][None]), CFG.pixel_mean,
                        CFG.pixel_std)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert float(jnp.abs(a).max()) > 0.5

"""SAM's prompt encoder + mask decoder as an ONNX graph, built from samjax's parameters (no tracing, no torch).

    python -m samjax.export_onnx --checkpoint ckpt/sam_vit_h --out decoder.onnx [--return-single-mask]

The graph has the inputs and outputs of the official `SamOnnxModel` (segment_anything/utils/onnx.py) as the
official scripts/export_onnx_model.py exports it, so code written for the official decoder (its web demo, an
onnxruntime loop) runs it unchanged:

    image_embeddings (1, C, g, g) float32  NCHW: samjax's (1, g, g, C) embedding transposed (0, 3, 1, 2)
    point_coords     (1, N, 2) float32     (x, y) in the resized input frame (`transforms.apply_coords`); N dynamic
    point_labels     (1, N) float32        1 foreground, 0 background, 2 / 3 box corners, -1 padding point
    mask_input       (1, 1, 4g, 4g) float32  low-res logits of an earlier prediction
    has_mask_input   (1,) float32          1: use mask_input, 0: the learned no-mask embedding
    orig_im_size     (2,) float32          (H, W) of the original image
 -> masks            (1, M, H, W) float32  logits at the original size (threshold 0)
    iou_predictions  (1, M) float32        (stability scores of the low-res masks with use_stability_score)
    low_res_masks    (1, M, 4g, 4g) float32

M = 1 + num_multimask_outputs: output 0 is the single-mask output, 1.. the multimask ones (the official
`predict_masks` order). With return_single_mask, M = 1: the best multimask output for one point (N <= 2 with
the padding point), the single-mask output for more (the official `select_masks` reweighting).

Built with the `onnx` package's helper API at opset 17 (LayerNormalization, Erf GELU, ConvTranspose, bilinear
Resize with half-pixel centres = torch's align_corners=False), float32 throughout. The image-grid positional
encoding depends on the parameters only and is stored as a constant, as are the output tokens.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from samjax.models import Sam, SamConfig

INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
DEFAULT_OPSET = 17
STABILITY_OFFSET = 1.0  # SamOnnxModel.stability_score_offset


class _Graph:
    """A tiny builder over onnx.helper: `op` adds a node and returns its output name(s), `const` an initializer."""

    def __init__(self):
        from onnx import helper, numpy_helper  # noqa: PLC0415 - optional dependency

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self._n = [], [], 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        arr = np.array(value, dtype=dtype, order="C")  # 0-d stays 0-d (ascontiguousarray makes it 1-d)
        name = name or self._name("c")
        self.initializers.append(self.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs):
        outs = [name] if name and outputs == 1 else [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    # --- layers (tokens last-axis channels unless noted)
    def linear(self, x: str, p: dict) -> str:
        return self.op("Add", self.op("MatMul", x, self.const(p["kernel"])), self.const(p["bias"]))

    def layer_norm(self, x: str, p: dict, eps: float) -> str:
        return self.op("LayerNormalization", x, self.const(p["scale"]), self.const(p["bias"]), axis=-1, epsilon=eps)

    def gelu(self, x: str) -> str:
        """torch.nn.GELU(): 0.5 x (1 + erf(x / sqrt 2))."""
        erf = self.op("Erf", self.op("Mul", x, self.const(1 / math.sqrt(2))))
        return self.op("Mul", self.op("Mul", x, self.const(0.5)), self.op("Add", erf, self.const(1.0)))

    def layer_norm_2d(self, x: str, p: dict, eps: float) -> str:
        """LayerNorm2d + GELU on NCHW: normalised over channels in NHWC, returned NCHW."""
        y = self.layer_norm(self.op("Transpose", x, perm=[0, 2, 3, 1]), p, eps)
        return self.op("Transpose", self.gelu(y), perm=[0, 3, 1, 2])

    def mlp(self, x: str, p: dict, num_layers: int) -> str:
        for i in range(num_layers):
            x = self.linear(x, p[f"layers_{i}"])
            if i < num_layers - 1:
                x = self.op("Relu", x)
        return x

    def attention(self, q: str, k: str, v: str, p: dict, num_heads: int) -> str:
        """Official transformer.Attention: q (1, Nq, C), k / v (1, Nk, C) -> (1, Nq, C)."""
        internal = p["q_proj"]["kernel"].shape[1]
        hd = internal // num_heads
        heads = self.const([0, 0, num_heads, hd], np.int64)
        qh = self.op("Transpose", self.op("Reshape", self.linear(q, p["q_proj"]), heads), perm=[0, 2, 1, 3])
        kh = self.op("Transpose", self.op("Reshape", self.linear(k, p["k_proj"]), heads), perm=[0, 2, 3, 1])
        vh = self.op("Transpose", self.op("Reshape", self.linear(v, p["v_proj"]), heads), perm=[0, 2, 1, 3])
        logits = self.op("Div", self.op("MatMul", qh, kh), self.const(math.sqrt(hd)))
        out = self.op("MatMul", self.op("Softmax", logits, axis=-1), vh)  # (1, nh, Nq, hd)
        out = self.op("Reshape", self.op("Transpose", out, perm=[0, 2, 1, 3]), self.const([0, 0, internal], np.int64))
        return self.linear(out, p["out_proj"])


def _np(tree):
    """Parameters (jax or numpy leaves) -> nested dict of float32 numpy arrays."""
    if isinstance(tree, dict):
        return {k: _np(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


def _conv_weight(kernel: np.ndarray) -> np.ndarray:
    """samjax Conv kernel (kh, kw, in, out) -> ONNX Conv weight (out, in, kh, kw)."""
    return kernel.transpose(3, 2, 0, 1)


def _conv_transpose_weight(kernel: np.ndarray) -> np.ndarray:
    """samjax ConvTranspose2x2 kernel (2, 2, in, out) -> ONNX ConvTranspose weight (in, out, 2, 2)."""
    return kernel.transpose(2, 3, 0, 1)


def build_model(config: SamConfig, params: dict, *, return_single_mask: bool = False,
                use_stability_score: bool = False, opset: int = DEFAULT_OPSET, image_pe: np.ndarray | None = None):
    """The decoder graph as an `onnx.ModelProto` (checked). params: the whole parameter tree (or just its
    "prompt_encoder" and "mask_decoder" parts); image_pe (1, g, g, C): `Sam.get_dense_pe` of the params
    (computed here when None)."""
    import onnx  # noqa: PLC0415 - optional dependency
    from onnx import TensorProto, helper  # noqa: PLC0415

    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    if image_pe is None:
        image_pe = Sam(config).apply({"params": {"prompt_encoder": params["prompt_encoder"]}},
                                     method=Sam.get_dense_pe)
    pe_params, dec = _np(params["prompt_encoder"]), _np(params["mask_decoder"])
    cfg = config
    c, g, s, m = cfg.prompt_embed_dim, cfg.grid_size, cfg.image_size, cfg.num_mask_tokens
    image_pe = np.asarray(image_pe, np.float32).reshape(1, g * g, c)
    G = _Graph()

    # ---------------------------------------------------------------- prompt encoder: sparse (point) embeddings
    coords = G.op("Div", G.op("Add", "point_coords", G.const(0.5)), G.const(float(s)))
    coords = G.op("Sub", G.op("Mul", coords, G.const(2.0)), G.const(1.0))
    coords = G.op("Mul", G.op("MatMul", coords, G.const(pe_params["pe_layer"]["positional_encoding_gaussian_matrix"])),
                  G.const(2 * math.pi))
    pe = G.op("Concat", G.op("Sin", coords), G.op("Cos", coords), axis=-1)  # (1, N, C)
    labels = G.op("Unsqueeze", "point_labels", G.const([-1], np.int64))  # (1, N, 1)

    def is_label(v):
        return G.op("Cast", G.op("Equal", labels, G.const(float(v))), to=TensorProto.FLOAT)

    pad = is_label(-1)
    sparse = G.op("Add", G.op("Mul", pe, G.op("Sub", G.const(1.0), pad)),
                  G.op("Mul", G.const(pe_params["not_a_point_embed"]["embedding"]), pad))
    for i in range(4):
        sparse = G.op("Add", sparse, G.op("Mul", G.const(pe_params[f"point_embeddings_{i}"]["embedding"]), is_label(i)))

    # ---------------------------------------------------------------- prompt encoder: dense (mask) embedding
    def conv(x, p, k):
        return G.op("Conv", x, G.const(_conv_weight(p["kernel"])), G.const(p["bias"]), kernel_shape=[k, k],
                    strides=[k, k])

    x = G.layer_norm_2d(conv("mask_input", pe_params["mask_downscaling_0"], 2), pe_params["mask_downscaling_1"], 1e-6)
    x = G.layer_norm_2d(conv(x, pe_params["mask_downscaling_3"], 2), pe_params["mask_downscaling_4"], 1e-6)
    mask_embed = conv(x, pe_params["mask_downscaling_6"], 1)  # (1, C, g, g)
    no_mask = G.const(pe_params["no_mask_embed"]["embedding"].reshape(1, c, 1, 1))
    dense = G.op("Add", G.op("Mul", "has_mask_input", mask_embed),
                 G.op("Mul", G.op("Sub", G.const(1.0), "has_mask_input"), no_mask))

    # ---------------------------------------------------------------- mask decoder: two-way transformer
    out_tokens = np.concatenate([dec["iou_token"]["embedding"], dec["mask_tokens"]["embedding"]])[None]
    tokens = G.op("Concat", G.const(out_tokens), sparse, axis=1)  # (1, 1 + M + N, C)
    src = G.op("Add", "image_embeddings", dense)
    keys = G.op("Transpose", G.op("Reshape", src, G.const([1, c, g * g], np.int64)), perm=[0, 2, 1])  # (1, HW, C)
    key_pe = G.const(image_pe)
    tp = dec["transformer"]
    nh = cfg.decoder_num_heads
    queries = tokens
    for i in range(cfg.decoder_depth):
        lp = tp[f"layers_{i}"]
        if i == 0:  # skip_first_layer_pe
            queries = G.attention(queries, queries, queries, lp["self_attn"], nh)
        else:
            q = G.op("Add", queries, tokens)
            queries = G.op("Add", queries, G.attention(q, q, queries, lp["self_attn"], nh))
        queries = G.layer_norm(queries, lp["norm1"], 1e-5)
        q, k = G.op("Add", queries, tokens), G.op("Add", keys, key_pe)
        queries = G.layer_norm(G.op("Add", queries, G.attention(q, k, keys, lp["cross_attn_token_to_image"], nh)),
                               lp["norm2"], 1e-5)
        mlp = G.linear(G.op("Relu", G.linear(queries, lp["mlp"]["lin1"])), lp["mlp"]["lin2"])
        queries = G.layer_norm(G.op("Add", queries, mlp), lp["norm3"], 1e-5)
        q, k = G.op("Add", queries, tokens), G.op("Add", keys, key_pe)
        keys = G.layer_norm(G.op("Add", keys, G.attention(k, q, queries, lp["cross_attn_image_to_token"], nh)),
                            lp["norm4"], 1e-5)
    q, k = G.op("Add", queries, tokens), G.op("Add", keys, key_pe)
    queries = G.layer_norm(G.op("Add", queries, G.attention(q, k, keys, tp["final_attn_token_to_image"], nh)),
                           tp["norm_final_attn"], 1e-5)

    # ---------------------------------------------------------------- mask decoder: heads and upscaling
    iou_token = G.op("Gather", queries, G.const(0, np.int64), axis=1)  # (1, C)
    iou_pred = G.mlp(iou_token, dec["iou_prediction_head"], cfg.iou_head_depth)  # (1, M)
    hyper = [G.op("Unsqueeze", G.mlp(G.op("Gather", queries, G.const(1 + i, np.int64), axis=1),
                                     dec[f"output_hypernetworks_mlps_{i}"], 3), G.const([1], np.int64))
             for i in range(m)]
    hyper_in = G.op("Concat", *hyper, axis=1)  # (1, M, C/8)
    x = G.op("Reshape", G.op("Transpose", keys, perm=[0, 2, 1]), G.const([1, c, g, g], np.int64))
    x = G.op("ConvTranspose", x, G.const(_conv_transpose_weight(dec["output_upscaling_0"]["kernel"])),
             G.const(dec["output_upscaling_0"]["bias"]), kernel_shape=[2, 2], strides=[2, 2])
    x = G.layer_norm_2d(x, dec["output_upscaling_1"], 1e-6)
    x = G.op("ConvTranspose", x, G.const(_conv_transpose_weight(dec["output_upscaling_3"]["kernel"])),
             G.const(dec["output_upscaling_3"]["bias"]), kernel_shape=[2, 2], strides=[2, 2])
    x = G.gelu(x)  # (1, C/8, 4g, 4g)
    x = G.op("Reshape", x, G.const([1, c // 8, 16 * g * g], np.int64))
    low_res = G.op("Reshape", G.op("MatMul", hyper_in, x), G.const([1, m, 4 * g, 4 * g], np.int64))

    # ---------------------------------------------------------------- SamOnnxModel's options and postprocessing
    scores = iou_pred
    if use_stability_score:
        def count(thresh):
            above = G.op("Cast", G.op("Greater", low_res, G.const(thresh)), to=TensorProto.FLOAT)
            return G.op("ReduceSum", above, G.const([-2, -1], np.int64), keepdims=0)
        scores = G.op("Div", count(cfg.mask_threshold + STABILITY_OFFSET), count(cfg.mask_threshold - STABILITY_OFFSET))
    if return_single_mask:
        n_points = G.op("Cast", G.op("Gather", G.op("Shape", "point_coords"), G.const(1, np.int64)),
                        to=TensorProto.FLOAT)
        reweight = G.const([[1000.0] + [0.0] * (m - 1)])
        score = G.op("Add", scores, G.op("Mul", G.op("Sub", n_points, G.const(2.5)), reweight))
        best = G.op("ArgMax", score, axis=1, keepdims=0)  # (1,)
        low_res = G.op("Gather", low_res, best, axis=1)  # (1, 1, 4g, 4g)
        scores = G.op("Gather", scores, best, axis=1)  # (1, 1)
    low_res = G.op("Identity", low_res, name="low_res_masks")
    G.op("Identity", scores, name="iou_predictions")

    lead = G.op("Slice", G.op("Shape", low_res), G.const([0], np.int64), G.const([2], np.int64))  # (1, M)
    up = G.op("Resize", low_res, "", "", G.op("Concat", lead, G.const([s, s], np.int64), axis=0), mode="linear",
              coordinate_transformation_mode="half_pixel")
    # the resized image's size before padding: floor(S / max(H, W) * (H, W) + 0.5), as resize_longest_image_size
    scale = G.op("Div", G.const(float(s)), G.op("ReduceMax", "orig_im_size", keepdims=1))
    prepadded = G.op("Cast", G.op("Floor", G.op("Add", G.op("Mul", scale, "orig_im_size"), G.const(0.5))),
                     to=TensorProto.INT64)
    up = G.op("Slice", up, G.const([0, 0], np.int64), prepadded, G.const([2, 3], np.int64))
    orig = G.op("Cast", "orig_im_size", to=TensorProto.INT64)
    G.op("Resize", up, "", "", G.op("Concat", lead, orig, axis=0), mode="linear",
         coordinate_transformation_mode="half_pixel", name="masks")

    f = TensorProto.FLOAT
    n = "num_points"
    inputs = [helper.make_tensor_value_info("image_embeddings", f, [1, c, g, g]),
              helper.make_tensor_value_info("point_coords", f, [1, n, 2]),
              helper.make_tensor_value_info("point_labels", f, [1, n]),
              helper.make_tensor_value_info("mask_input", f, [1, 1, 4 * g, 4 * g]),
              helper.make_tensor_value_info("has_mask_input", f, [1]),
              helper.make_tensor_value_info("orig_im_size", f, [2])]
    mo = 1 if return_single_mask else m
    outputs = [helper.make_tensor_value_info("masks", f, [1, mo, "height", "width"]),
               helper.make_tensor_value_info("iou_predictions", f, [1, mo]),
               helper.make_tensor_value_info("low_res_masks", f, [1, mo, 4 * g, 4 * g])]
    graph = helper.make_graph(G.nodes, "samjax_sam_decoder", inputs, outputs, G.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="samjax")
    model.ir_version = min(model.ir_version, 8)  # onnxruntime-web and older runtimes read IR 8
    onnx.checker.check_model(model, full_check=True)
    return model


def export(checkpoint: str | Path, out: str | Path, **options) -> Path:
    """Load a checkpoint (samjax directory or official .pth) and write its decoder graph to `out`."""
    import onnx  # noqa: PLC0415

    from samjax import infer  # noqa: PLC0415

    predictor = infer.load(checkpoint)
    model = build_model(predictor.config, predictor.decoder_variables["params"],
                        image_pe=np.asarray(predictor.image_pe), **options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, tmp)
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="samjax checkpoint directory or an official .pth")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--return-single-mask", action="store_true",
                   help="one mask per call (the official demo's choice) instead of all 1 + num_multimask outputs")
    p.add_argument("--use-stability-score", action="store_true",
                   help="iou_predictions holds the low-res masks' stability scores instead of the IoU head's")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17; default %(default)s)")
    a = p.parse_args(argv)
    try:
        path = export(a.checkpoint, a.out, return_single_mask=a.return_single_mask,
                      use_stability_score=a.use_stability_score, opset=a.opset)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): inputs {', '.join(INPUT_NAMES)} -> "
          f"outputs {', '.join(OUTPUT_NAMES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ImageEncoderViT: the MAE-style ViT with windowed attention and decomposed relative positions.

Official: segment_anything/modeling/image_encoder.py. Submodule and parameter names follow its state_dict
(`blocks.3.attn.rel_pos_h` <-> `blocks_3/attn/rel_pos_h`), so `samjax.convert` is a key table plus transposes.

Shapes (official ViT-B at 1024): image (B, 1024, 1024, 3) normalised float -> patches (B, 64, 64, 768)
-> blocks -> neck -> image embedding (B, 64, 64, 256).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from samjax.models.attention import attention
from samjax.models.common import MLPBlock, conv, dense, gelu, layer_norm, partitioned
from samjax.models.sam.config import SamConfig

f32 = jnp.float32
_BHWC = ("activation_batch", "activation_height", "activation_width", "activation_embed")


def window_partition(x: jax.Array, window: int, fill: jax.Array | None = None) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * nH * nW, window, window, C), padding H and W up to multiples of `window` with zeros, or
    with `fill` (C,) where given."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        if fill is not None:
            inside = (jnp.arange(h + pad_h) < h)[:, None] & (jnp.arange(w + pad_w) < w)[None, :]
            x = jnp.where(inside[None, :, :, None], x, fill.astype(x.dtype))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: jax.Array, window: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    """Inverse of `window_partition`, dropping the padding: -> (B, H, W, C)."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, :h, :w, :]


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with optional decomposed relative-position bias; with
    `window_size` > 0 within non-overlapping windows of that size (the grid zero-padded to whole windows).

    impl picks the attention implementation (samjax.models.attention; all compute the official formula)."""

    dim: int
    num_heads: int
    qkv_bias: bool
    use_rel_pos: bool
    input_size: tuple[int, int]
    dtype: jnp.dtype = f32
    impl: str = "auto"  # samjax.models.attention.IMPLEMENTATIONS
    window_size: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        nh, hd = self.num_heads, c // self.num_heads
        grid = x.shape[1:3]
        project_qkv = dense(3 * c, ("embed", "qkv"), name="qkv", use_bias=self.qkv_bias, dtype=self.dtype)
        qkv = project_qkv(x)
        if self.window_size > 0:
            padding = project_qkv(jnp.zeros((1, c), x.dtype))[0]  # what a zero padding token projects to
            qkv, pad_hw = window_partition(qkv, self.window_size, padding)
        b, h, w = qkv.shape[:3]
        qkv = qkv.reshape(b, h * w, 3, nh, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, L, nh, hd)
        rel_pos = None
        if self.use_rel_pos:
            rows_h, rows_w = 2 * self.input_size[0] - 1, 2 * self.input_size[1] - 1
            rel_pos_h = self.param("rel_pos_h", partitioned(nn.initializers.zeros_init(), ("rel_pos", "head_dim")),
                                   (rows_h, hd), f32)
            rel_pos_w = self.param("rel_pos_w", partitioned(nn.initializers.zeros_init(), ("rel_pos", "head_dim")),
                                   (rows_w, hd), f32)
            if rows_h != 2 * h - 1 or rows_w != 2 * w - 1:
                raise ValueError(f"attention input {h}x{w} does not match its relative-position tables "
                                 f"({rows_h}, {rows_w} rows), built for {self.input_size}")
            rel_pos = (rel_pos_h, rel_pos_w)
        out = attention(q, k, v, rel_pos, (h, w), self.impl).reshape(b, h, w, c)
        if self.window_size > 0:
            out = window_unpartition(out, self.window_size, pad_hw, grid)
        return dense(c, ("heads", "embed"), name="proj", dtype=self.dtype)(out)


def drop_path(x: jax.Array, rate, rng: jax.Array | None) -> jax.Array:
    """Stochastic depth on a residual branch x (B, ...): zero whole samples with probability `rate` (a float or a
    traced scalar), rescale the rest. rng None: no drop."""
    if rng is None or (isinstance(rate, float) and rate == 0.0):
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when `window_size > 0`, else global.

    x (B, g, g, embed) -> (B, g, g, embed). drop_rate, rng: stochastic depth of both residual branches (a float or a
    traced scalar; rng None: none), so a scan over blocks can pass each block's rate and key as data.
    """

    config: SamConfig
    window_size: int

    @nn.compact
    def __call__(self, x: jax.Array, drop_rate=0.0, rng: jax.Array | None = None) -> jax.Array:
        cfg, dt = self.config, self.config.jnp_dtype
        rngs = jax.random.split(rng) if rng is not None else (None, None)
        shortcut = x
        x = layer_norm("embed", eps=1e-6, name="norm1", dtype=dt)(x)
        size = (self.window_size, self.window_size) if self.window_size > 0 else (cfg.grid_size, cfg.grid_size)
        x = Attention(cfg.encoder_embed_dim, cfg.encoder_num_heads, cfg.encoder_qkv_bias, cfg.encoder_use_rel_pos,
                      size, dtype=dt, impl=cfg.attention, window_size=self.window_size, name="attn")(x)
        x = shortcut + drop_path(x, drop_rate, rngs[0])
        y = layer_norm("embed", eps=1e-6, name="norm2", dtype=dt)(x)
        y = MLPBlock(cfg.encoder_embed_dim, int(cfg.encoder_embed_dim * cfg.encoder_mlp_ratio),
                     ("embed", "mlp"), act=gelu, dtype=dt, name="mlp")(y)
        x = x + drop_path(y, drop_rate, rngs[1])
        return nn.with_logical_constraint(x, _BHWC)


def block_windows(config: SamConfig) -> tuple[int, ...]:
    """The window size of every encoder block (0: global attention)."""
    global_idx = set(config.encoder_global_attn_indexes)
    return tuple(0 if i in global_idx else config.window_size for i in range(config.encoder_depth))


def block_groups(config: SamConfig) -> tuple[int, tuple[tuple[int, int], ...]]:
    """How `ImageEncoderViT` scans its blocks: (G, runs). The blocks are G repeats of one group (the shortest period
    of their window sizes: ViT-B/L/H's windowed blocks followed by a global one), and a group is runs of equal
    blocks, ((window, length), ...), in order. Block i is position i % P of group i // P, P = the runs' total length.
    XLA compiles each run's block once, whatever the depth."""
    windows = block_windows(config)
    depth = len(windows)
    period = next(p for p in range(1, depth + 1) if depth % p == 0 and windows == windows[:p] * (depth // p))
    runs: list[list[int]] = []
    for w in windows[:period]:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    return depth // period, tuple((w, n) for w, n in runs)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, S, S, 3) -> (B, S/p, S/p, embed)."""

    config: SamConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        return conv(cfg.encoder_embed_dim, cfg.patch_size, stride=cfg.patch_size, axes=("in_channels", "embed"),
                    name="proj", dtype=cfg.jnp_dtype)(x)


class ImageEncoderViT(nn.Module):
    """images (B, S, S, in_chans) normalised -> image embeddings (B, S/p, S/p, prompt_embed_dim).

    train: enables drop path (config.encoder_drop_path_rate, rising linearly over the blocks; needs a "dropout" rng;
    block i draws from fold_in(that key, i)). config.encoder_remat rematerialises every block in the backward pass
    (less activation memory). return_interm: also return the output of every global-attention block (window size 0),
    in block order, each (B, S/p, S/p, embed): HQ-SAM's `interm_embeddings`. Returns (embeddings, interm) then.

    config.encoder_scan: the blocks run as a `lax.scan` over their repeating group (`block_groups`), so XLA compiles
    one block per kind instead of all of them (ViT-H: 2 instead of 32). Parameters keep their per-block names
    (`blocks_3/attn/qkv/kernel`, as the official state_dict); each call stacks them per run. The same values as the
    blocks one after another (encoder_scan False, which also creates the parameters).
    """

    config: SamConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, return_interm: bool = False):
        cfg, dt = self.config, self.config.jnp_dtype
        if x.shape[1:] != (cfg.image_size, cfg.image_size, cfg.in_chans):
            raise ValueError(f"ImageEncoderViT expects (B, {cfg.image_size}, {cfg.image_size}, {cfg.in_chans}) "
                             f"images, got {tuple(x.shape)}")
        x = PatchEmbed(cfg, name="patch_embed")(x.astype(dt))
        if cfg.encoder_use_abs_pos:
            g = cfg.grid_size
            pos = self.param("pos_embed", partitioned(nn.initializers.zeros_init(), (None, "pos_h", "pos_w", "embed")),
                             (1, g, g, cfg.encoder_embed_dim), f32)
            x = x + pos.astype(dt)
        x = nn.with_logical_constraint(x, _BHWC)
        drop = cfg.encoder_drop_path_rate if train else 0.0
        rates = np.linspace(0.0, drop, cfg.encoder_depth, dtype=np.float32)
        key = self.make_rng("dropout") if drop > 0.0 else None
        if cfg.encoder_scan and cfg.encoder_depth > 1 and not self.is_initializing():
            x, interm = self._scanned_blocks(x, rates, key)
        else:
            x, interm = self._blocks(x, rates, key)
        # neck: 1x1 conv -> LN2d -> 3x3 conv -> LN2d, no biases.
        c = cfg.prompt_embed_dim
        x = conv(c, 1, axes=("embed", "neck"), use_bias=False, name="neck_0", dtype=dt)(x)
        x = layer_norm("neck", eps=1e-6, name="neck_1", dtype=dt)(x)
        x = conv(c, 3, padding=1, axes=("neck", "neck"), use_bias=False, name="neck_2", dtype=dt)(x)
        x = layer_norm("neck", eps=1e-6, name="neck_3", dtype=dt)(x)
        return (x, tuple(interm)) if return_interm else x

    def _blocks(self, x, rates, key):
        """The blocks one after another: (x, outputs of the global blocks)."""
        cfg = self.config
        block = nn.remat(Block) if cfg.encoder_remat else Block
        interm = []
        for i, window in enumerate(block_windows(cfg)):
            rng = None if key is None else jax.random.fold_in(key, i)
            x = block(cfg, window, name=f"blocks_{i}")(x, float(rates[i]), rng)
            if window == 0:
                interm.append(x)
        return x, interm

    def _scanned_blocks(self, x, rates, key):
        """The blocks as a scan over their groups (`block_groups`), each run of equal blocks an inner scan; a block is
        applied as a pure function of its slice of the run's stacked parameters."""
        cfg = self.config
        n_groups, runs = block_groups(cfg)
        period = sum(n for _, n in runs)
        starts = [sum(n for _, n in runs[:k]) for k in range(len(runs))]
        params = self.variables["params"]
        stacked = [jax.tree.map(lambda *a, n=n: jnp.stack(a).reshape(n_groups, n, *a[0].shape),
                                *[params[f"blocks_{g * period + start + j}"]
                                  for g in range(n_groups) for j in range(n)])
                   for (_, n), start in zip(runs, starts)]  # per run: (G, n, ...) leaves
        index = np.arange(cfg.encoder_depth, dtype=np.int32).reshape(n_groups, period)

        def run_body(window):
            """One block of a run as a scan body: (x, (params, rate, index)) -> (x, x for a global block)."""
            def body(x, xs):
                p, rate, i = xs
                rng = None if key is None else jax.random.fold_in(key, i)
                y = Block(cfg, window, parent=None).apply({"params": p}, x, rate, rng)
                return y, (y if window == 0 else None)

            return jax.checkpoint(body) if cfg.encoder_remat else body

        def group(x, xs):
            run_params, g_rates, g_index = xs
            outs = []  # per run of global blocks: their outputs (n, B, g, g, C)
            for (w, n), start, p in zip(runs, starts, run_params):
                x, ys = jax.lax.scan(run_body(w), x, (p, g_rates[start:start + n], g_index[start:start + n]))
                if w == 0:
                    outs.append(ys)
            return x, outs

        x, outs = jax.lax.scan(group, x, (stacked, rates.reshape(n_groups, period), index))
        interm = [run[g, k] for g in range(n_groups) for run in outs for k in range(run.shape[1])]  # block order
        return x, interm

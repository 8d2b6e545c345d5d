"""Ahead-of-time compilation for a slice you do not have, and a cost model of the result that counts loops.

    devices = topology_devices("v5p:4x4x4")          # 64 TPU v5p chips, described by libtpu on a CPU-only host
    compiled = jitted.lower(*abstract_args).compile()
    footprint(compiled)                               # bytes per chip: arguments + outputs + temporaries - donated
    cost = loop_cost(compiled, "v5p")                 # FLOPs, bytes and modelled seconds with loop trip counts

Topologies are TPU ones (`v5p:4x4x4`, `v5e:16x16`, `v4:4x4x8`, `v6e:2x2`), compiled by libtpu (the `[tpu]`
extra) with `JAX_PLATFORMS=cpu`. GPU targets (`h100:8`) need the CUDA PJRT plugin on the compiling machine;
without it `topology_devices` says so.

Why a cost model of our own: XLA's `cost_analysis()` counts a while loop's body once, and a SAM training step is
mostly loops (11 prompt rounds, scanned encoder blocks, gradient accumulation). `loop_cost` reads the optimised
HLO: each computation's matrix FLOPs (dot and convolution) and memory traffic (operands and results of its
top-level instructions), weighted by how often it runs (a while body by its known trip count, nested loops
multiplied). The modelled time is the sum over instructions of max(FLOPs / peak, bytes / HBM bandwidth): a
roofline per kernel, not a measurement (no overlap of kernels, no collectives' latency).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

import jax
import numpy as np

# bf16 dense peak FLOP/s and HBM bytes/s per chip, by device-kind substring (public specifications).
# The first matching key wins: libtpu calls a v5e "TPU v5 lite" and a v5p "TPU v5".
PEAK_FLOPS = {"v5 lite": 197e12, "v5e": 197e12, "v6 lite": 918e12, "v6e": 918e12, "v5p": 459e12, "v5": 459e12,
              "v4": 275e12, "H100": 989e12, "H200": 989e12}
HBM_BANDWIDTH = {"v5 lite": 819e9, "v5e": 819e9, "v6 lite": 1640e9, "v6e": 1640e9, "v5p": 2765e9, "v5": 2765e9,
                 "v4": 1228e9, "H100": 3350e9, "H200": 4800e9}
# Memory per chip (bytes) by device-kind substring (a device's own `memory_stats()["bytes_limit"]` wins where known).
# The first matching key wins: libtpu calls a v5e "TPU v5 lite" and a v5p "TPU v5".
HBM_BYTES = {"v5 lite": 16 * 2**30, "v5e": 16 * 2**30, "v6 lite": 32 * 2**30, "v6e": 32 * 2**30, "v5p": 95 * 2**30,
             "v5": 95 * 2**30, "v4": 32 * 2**30, "H100": 80 * 10**9, "H200": 141 * 10**9, "A100": 80 * 10**9}
GPU_KINDS = {"h100": "H100", "h200": "H200", "a100": "A100"}


def by_kind(table: dict[str, float], kind: str) -> float | None:
    low = kind.lower()
    return next((v for k, v in table.items() if k.lower() in low), None)


def topology_devices(topology: str) -> list:
    """The devices of a slice given as `KIND:SHAPE` (TPU: `v5p:4x4x4`; GPU: `h100:8`), for ahead-of-time
    compilation on this host. ValueError with the reason when this host cannot compile for it."""
    kind, _, shape = topology.partition(":")
    if not shape:
        raise ValueError(f"--aot expects KIND:SHAPE, e.g. v5p:4x4x4, v5e:16x16, v4:4x4x8 or h100:8; got {topology!r}")
    from jax.experimental import topologies  # noqa: PLC0415 - needs a backend plugin only when called

    if kind.lower() in GPU_KINDS:
        try:
            return list(topologies.get_topology_desc(platform="cuda", topology_name=topology).devices)
        except Exception as e:  # noqa: BLE001 - any failure here means: no CUDA compiler on this host
            raise ValueError(f"cannot compile for {topology} on this host: ahead-of-time GPU compilation needs "
                             f"the CUDA PJRT plugin (pip install 'jax[cuda12]') on the compiling machine "
                             f"({e})") from None
    # libtpu reads the host's TPU environment even to describe a remote slice; on a CPU host there is none
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compiling only: other processes may compile too
    dims = tuple(int(d) for d in shape.lower().split("x") if d.isdigit())
    # a slice smaller than a host (a single v5e chip, as Colab's) needs its host bounds said explicitly
    small = {"chips_per_host_bounds": (dims + (1, 1, 1))[:3]} if math.prod(dims) < 4 else {}
    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu", **small).devices)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot compile for TPU topology {topology!r} here ({str(e).splitlines()[0][:200]}): "
                         "it needs libtpu (pip install -e '.[tpu]' in its own virtualenv) "
                         "and JAX_PLATFORMS=cpu") from None


def footprint(compiled) -> int:
    """Device memory an executable needs per chip: arguments + outputs + temporaries - donated (aliased) buffers."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def out_of_memory_bytes(message: str) -> int | None:
    """The memory a refused compile asked for, from XLA's RESOURCE_EXHAUSTED message ("... the total memory required
    for HLO temporaries (186.38G) exceeds available HBM (95.74G)"), or None for any other error."""
    if "RESOURCE_EXHAUSTED" not in message and "Ran out of memory" not in message:
        return None
    m = re.search(r"required[^(]*\(([\d.]+)([KMGT]?)", message)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else 2**62


# ------------------------------------------------------------------------------------------ loop-aware cost model
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\((.*)\)\s*->\s*.*)?\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*?)\)(.*)$")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id",
         "replica-id", "iota", "opt-barrier"}


def _arrays(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _ARRAY.findall(text)
            if dt in _DTYPE_BYTES]


def _bytes(shapes) -> int:
    return sum(_DTYPE_BYTES[dt] * math.prod(dims) for dt, dims in shapes)


@dataclasses.dataclass
class _Instr:
    name: str
    op: str
    shapes: list  # result arrays
    operands: list[str]
    args: str
    attrs: str


@dataclasses.dataclass
class LoopCost:
    """Cost of one run of an executable with loops counted: matrix FLOPs, bytes moved, modelled seconds (per
    chip), and the trip counts found ({while instruction: trips})."""

    flops: float
    bytes: float
    seconds: float
    trips: dict[str, int]


def _parse(hlo: str) -> tuple[dict[str, list[_Instr]], dict[str, dict[str, list]], str]:
    comps, shapes, entry, current = {}, {}, "", None
    for line in hlo.splitlines():
        h = _HEADER.match(line)
        if h:
            current = h.group(1)
            comps[current], shapes[current] = [], {}
            if line.startswith("ENTRY"):
                entry = current
            for param in (h.group(2) or "").split(", "):
                pname, _, ptype = param.partition(": ")
                shapes[current][pname.strip().lstrip("%")] = _arrays(ptype)
            continue
        if current is None or line.strip() in ("}", ""):
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, rtype, op, args, attrs = m.groups()
        # operands are "%a, %b" (optimised HLO), "a, b" or "f32[4,8]{1,0} %a, ..." (typed)
        named = re.findall(r"%([\w.\-]+)", args)
        operands = named or [a.strip() for a in args.split(",") if a.strip() and not _ARRAY.match(a.strip())]
        inst = _Instr(name, op, _arrays(rtype), operands, args, attrs)
        comps[current].append(inst)
        shapes[current][name] = inst.shapes
    return comps, shapes, entry


def _dot_flops(inst: _Instr, shapes: dict[str, list]) -> float:
    out = math.prod(inst.shapes[0][1]) if inst.shapes else 0
    if inst.op == "dot":
        lhs = shapes.get(inst.operands[0], [])
        dims = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", inst.attrs)
        if not lhs or not dims:
            return 0.0
        k = math.prod(lhs[0][1][int(d)] for d in dims.group(1).split(",") if d)
        return 2.0 * out * k
    if inst.op == "convolution":
        rhs = shapes.get(inst.operands[1], []) if len(inst.operands) > 1 else []
        labels = re.search(r"dim_labels=\w+_(\w+)->", inst.attrs)
        if not rhs or not labels or "o" not in labels.group(1):
            return 0.0
        kernel = rhs[0][1]
        per_out = math.prod(kernel) / kernel[labels.group(1).index("o")]
        # XLA writes batched products as convolutions whose input is dilated by the window (lhs_dilate = size): an
        # output then meets one real input element per window dimension, not size of them
        size = re.search(r"window=\{[^}]*?size=([\dx]+)", inst.attrs)
        dilate = re.search(r"window=\{[^}]*?lhs_dilate=([\dx]+)", inst.attrs)
        if size and dilate:
            sizes = [int(v) for v in size.group(1).split("x")]
            dil = [int(v) for v in dilate.group(1).split("x")]
            per_out *= math.prod(math.ceil(w / d) for w, d in zip(sizes, dil)) / math.prod(sizes)
        return 2.0 * out * per_out
    return 0.0


def loop_cost(compiled_or_text: Any, kind: str, peak_flops: float | None = None,
              hbm_bandwidth: float | None = None) -> LoopCost:
    """The loop-counted cost of a compiled executable (or its optimised HLO text) on one chip of `kind`
    (a device kind, e.g. "TPU v5p", or a table key, e.g. "v5p"); see the module docstring."""
    hlo = compiled_or_text if isinstance(compiled_or_text, str) else compiled_or_text.as_text()
    peak = peak_flops or by_kind(PEAK_FLOPS, kind) or 1e12
    bw = hbm_bandwidth or by_kind(HBM_BANDWIDTH, kind) or 1e11
    comps, shapes, entry = _parse(hlo)
    flops_of: dict[str, float] = {}

    def comp_flops(name: str) -> float:  # matrix FLOPs of one run of a computation, fused callees included
        if name not in flops_of:
            flops_of[name] = 0.0
            total = 0.0
            for inst in comps.get(name, []):
                total += _dot_flops(inst, shapes[name])
                if inst.op == "fusion":
                    total += sum(comp_flops(c) for c in re.findall(r"calls=%?([\w.\-]+)", inst.attrs))
            flops_of[name] = total
        return flops_of[name]

    trips: dict[str, int] = {}
    totals = {"flops": 0.0, "bytes": 0.0, "seconds": 0.0}

    def run(name: str, times: float, depth: int = 0) -> None:
        if depth > 64:
            return
        for inst in comps.get(name, []):
            called = []
            if inst.op == "while":
                body = re.search(r"body=%?([\w.\-]+)", inst.attrs)
                n = re.search(r'"known_trip_count":\{"n":"(\d+)"', inst.attrs)
                trip = int(n.group(1)) if n else _trip_from_condition(inst, comps, shapes, name)
                trips[inst.name] = trip
                if body:
                    run(body.group(1), times * trip, depth + 1)
                continue
            if inst.op in ("call", "conditional", "async-start"):
                called = re.findall(r"(?:to_apply|calls|branch_computations=\{)[=]?%?([\w.\-]+)", inst.attrs)
                for c in called:
                    run(c, times, depth + 1)
                continue
            if inst.op in _FREE:
                continue
            flops = _dot_flops(inst, shapes[name])
            if inst.op == "fusion":
                flops += sum(comp_flops(c) for c in re.findall(r"calls=%?([\w.\-]+)", inst.attrs))
            moved = _bytes(inst.shapes) + sum(_bytes(shapes[name].get(o, [])) for o in inst.operands)
            totals["flops"] += times * flops
            totals["bytes"] += times * moved
            totals["seconds"] += times * max(flops / peak, moved / bw)

    run(entry, 1.0)
    return LoopCost(totals["flops"], totals["bytes"], totals["seconds"], trips)


def _trip_from_condition(inst: _Instr, comps, shapes, parent: str | None = None) -> int:
    """A while loop's trip count when XLA left no annotation (TPU executables): its condition's root compares the
    loop counter (tuple element k of the state) with a constant limit; the counter starts at the constant that
    element k of the loop's initial tuple holds (XLA may peel iterations, so not always 0) and steps by 1."""
    cond = re.search(r"condition=%?([\w.\-]+)", inst.attrs)
    body = comps.get(cond.group(1), []) if cond else []
    by_name = {i.name: i for i in body}
    root = body[-1] if body else None
    if root is None:
        return 1
    direction = re.search(r"direction=(\w+)", root.attrs)
    if root.op == "fusion":  # a wrapped compare: look inside for the direction
        called = re.search(r"calls=%?([\w.\-]+)", root.attrs)
        inner = comps.get(called.group(1), []) if called else []
        direction = next((re.search(r"direction=(\w+)", i.attrs) for i in inner if i.op == "compare"), None)
    operands = [_through_copies(by_name, o) for o in root.operands]
    consts = [_constant(o) for o in operands]
    limit = next((c for c in consts if c is not None), None)
    index = next((int(m.group(1)) for o in operands if o is not None and o.op == "get-tuple-element"
                  for m in [re.search(r"index=(\d+)", o.attrs)] if m), 0)
    if limit is None:
        return 1
    start = 0
    init_by_name = {i.name: i for i in comps.get(parent, [])} if parent else {}
    state = init_by_name.get(inst.operands[0]) if inst.operands else None
    if state is not None and state.op == "tuple" and index < len(state.operands):
        first = _constant(_through_copies(init_by_name, state.operands[index]))
        start = first if first is not None else 0
    op = direction.group(1) if direction else "LT"
    if consts and consts[0] is not None:  # compare(limit, counter): mirror the direction
        op = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE"}.get(op, op)
    trips = {"LT": limit - start, "LE": limit - start + 1, "GT": start - limit, "GE": start - limit + 1}.get(op, limit)
    return max(int(trips), 0)


def _through_copies(by_name: dict, name: str):
    """The instruction `name` refers to, through copies, bitcasts and converts."""
    inst = by_name.get(name)
    while inst is not None and inst.op in ("copy", "bitcast", "convert", "reshape") and inst.operands:
        inst = by_name.get(inst.operands[0])
    return inst


def _constant(inst) -> int | None:
    return int(inst.args) if inst is not None and inst.op == "constant" and inst.args.lstrip("-").isdigit() else None


def xla_cost(compiled) -> dict[str, float]:
    """XLA's own cost analysis (loop bodies counted once): {"flops", "bytes accessed", "optimal_seconds"}."""
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, list) else c
    return {k: float(c.get(k, float("nan"))) for k in ("flops", "bytes accessed", "optimal_seconds")}


def abstract_on(tree, sharding) -> Any:
    """A tree of jax.ShapeDtypeStruct (from arrays or shapes) placed with `sharding`."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(np.shape(s), s.dtype, sharding=sharding), tree)

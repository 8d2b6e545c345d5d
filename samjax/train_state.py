"""The training state, its mesh shardings, and the orbax CheckpointManager that saves and resumes it.

    state = {"step": () int32, "params": tree of float32, "opt_state": optax state,
             "rng": (2,) uint32 raw key data, "nonfinite": () int32 total skipped steps,
             "streak": () int32 consecutive skipped steps}

Shardings: every parameter's logical axes (models.param_logical_axes) go through the rules of samjax.sharding
to mesh axes; optimizer-state leaves that mirror a parameter (Adam's mu / nu) take that parameter's sharding,
everything else is replicated.

Checkpoints: `WORKDIR/checkpoints/<step>/{state,data}`: the state (StandardSave) and the grain iterator state
(grain.checkpoint.CheckpointSave), written asynchronously, the last `keep` kept. `restore` reads the latest
into the given shardings and rewinds the iterator, so a resumed run continues bit-identically.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from samjax import sharding as sharding_rules
from samjax.models import SamConfig, abstract_params, param_logical_axes
from samjax.sharding import MESH_AXES

BATCH_AXES = ("data", "fsdp")


def _grain():
    """grain, imported only when a data iterator is checkpointed (the train step itself does not need it)."""
    import grain  # noqa: PLC0415

    return grain


def make_mesh(shape: dict | tuple, devices=None) -> jax.sharding.Mesh:
    """Mesh with axes (data, fsdp, tensor). shape: {"data": d, "fsdp": f, "tensor": t}; one entry may be -1
    (all remaining devices)."""
    sizes = [int(shape[a]) for a in MESH_AXES] if isinstance(shape, dict) else [int(s) for s in shape]
    if isinstance(shape, dict) and shape.get("num_devices") and devices is None:
        devices = jax.devices()[:shape["num_devices"]]
    devices = jax.devices() if devices is None else devices
    n = len(devices)
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    if -1 in sizes:
        rest = int(np.prod([s for s in sizes if s != -1]))
        if n % rest:
            raise ValueError(f"{n} devices do not divide into mesh {dict(zip(MESH_AXES, sizes))}")
        sizes[sizes.index(-1)] = n // rest
    if int(np.prod(sizes)) != n:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {n}")
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=devices)


def logical_to_spec(names: tuple, rules) -> P:
    """Logical names -> mesh PartitionSpec by the rules (first match); a mesh axis is used at most once per
    array (a name repeated in one array, e.g. the neck's 3x3 conv (neck, neck), is sharded on its first use)."""
    table = dict(rules)
    used, out = set(), []
    for name in names:
        axes = table.get(name) if name is not None else None
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes or ())
        if not axes_t or used & set(axes_t):
            out.append(None)
            continue
        used |= set(axes_t)
        out.append(axes)
    return P(*out)


def param_shardings(config: SamConfig, mesh, rules=sharding_rules.DEFAULT_RULES) -> Any:
    """Tree like params of NamedSharding (mesh axes that do not divide a dimension are dropped to replicated)."""
    specs = param_logical_axes(config)
    shapes = abstract_params(config)

    def one(spec, shape):
        mesh_spec = logical_to_spec(tuple(spec), rules)
        fixed = []
        for dim, axes in zip(shape.shape, tuple(mesh_spec) + (None,) * (len(shape.shape) - len(mesh_spec))):
            size = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ())]))
            fixed.append(axes if size > 1 and dim % size == 0 else None)
        return NamedSharding(mesh, P(*fixed))

    return jax.tree.map(one, specs, shapes, is_leaf=lambda x: isinstance(x, P))


def _names(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def mirror_shardings(tree: Any, params_shardings: Any, mesh) -> Any:
    """Shardings for an optimizer-state tree: a leaf whose path ends with a parameter's path (and has its rank)
    gets that parameter's sharding; others are replicated."""
    by_path = {_names(p): s for p, s in jax.tree_util.tree_leaves_with_path(params_shardings)}
    lengths = sorted({len(k) for k in by_path}, reverse=True)
    replicated = NamedSharding(mesh, P())

    def pick(path, leaf):
        names = _names(path)
        for n in lengths:
            s = by_path.get(names[-n:]) if len(names) >= n else None
            if s is not None and len(s.spec) <= np.ndim(leaf):
                return s
        return replicated

    return jax.tree_util.tree_map_with_path(pick, tree)


def abstract_state(config: SamConfig, tx, mesh, rules=sharding_rules.DEFAULT_RULES) -> tuple[Any, Any]:
    """(abstract state of ShapeDtypeStruct with shardings, tree of shardings)."""
    params = abstract_params(config)
    p_sh = param_shardings(config, mesh, rules)
    opt = jax.eval_shape(tx.init, params)
    rep = NamedSharding(mesh, P())
    shardings = {"step": rep, "params": p_sh, "opt_state": mirror_shardings(opt, p_sh, mesh), "rng": rep,
                 "nonfinite": rep, "streak": rep}
    shapes = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params, "opt_state": opt,
              "rng": jax.ShapeDtypeStruct((2,), jnp.uint32), "nonfinite": jax.ShapeDtypeStruct((), jnp.int32),
              "streak": jax.ShapeDtypeStruct((), jnp.int32)}
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
    return abstract, shardings


def init_state(params: Any, tx, seed: int, shardings: Any) -> dict:
    """The step-0 state in its shardings. params: host (numpy) tree, identical on every process."""
    p_sh = shardings["params"]
    params = jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]), params, p_sh)
    opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
    rep = shardings["step"]
    scalar = lambda v, dt: jax.make_array_from_callback((), rep, lambda _: np.asarray(v, dt))  # noqa: E731
    k_train = np.asarray(jax.random.split(jax.random.PRNGKey(seed))[1])
    return {"step": scalar(0, np.int32), "params": params, "opt_state": opt_state,
            "rng": jax.make_array_from_callback((2,), rep, lambda idx: k_train[idx]),
            "nonfinite": scalar(0, np.int32), "streak": scalar(0, np.int32)}


class Checkpoints:
    """orbax CheckpointManager of (state, data iterator) under `directory`; async; keeps the last `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iter=None, force: bool = False) -> bool:
        args = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            args["data"] = _grain().checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, abstract: Any, data_iter=None, step: int | None = None) -> dict:
        """The state at `step` (default latest) in the shardings of `abstract`; rewinds `data_iter` in place."""
        step = self.manager.latest_step() if step is None else step
        args = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            args["data"] = _grain().checkpoint.CheckpointRestore(data_iter)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]
        except KeyError as e:  # grain's set_state on an iterator state of another pipeline layout
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} holds a data-iterator state this run's input "
                f"pipeline cannot take (missing {e}): resume with the data settings it was saved with (e.g. "
                f"config.data.worker_count), or start a new workdir") from e

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

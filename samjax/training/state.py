"""The training state and its mesh shardings.

    state = {"step": () int32, "params": tree of float32, "opt_state": optax state,
             "rng": (2,) uint32 raw key data, "nonfinite": () int32 total skipped steps,
             "streak": () int32 consecutive skipped steps}

Shardings: every parameter's logical axes (models.param_logical_axes) go through the rule table
(samjax.parallel) to mesh axes; optimizer-state leaves that mirror a parameter (Adam's mu / nu) take that
parameter's sharding, everything else is replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from samjax import parallel
from samjax.models import SamConfig, abstract_params, param_logical_axes


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


def abstract_state(config: SamConfig, tx, mesh, rules: parallel.Rules = parallel.DEFAULT_RULES, params=None,
                   axes=None, model_state=None) -> tuple[Any, Any]:
    """(abstract state of ShapeDtypeStruct with shardings, tree of shardings). params / axes: the trained tree and
    its logical axes (default: SAM's of `config`); model_state: collections the objective carries between steps
    (replicated), making a "model_state" entry."""
    params = abstract_params(config) if params is None else params
    p_sh = parallel.param_shardings(param_logical_axes(config) if axes is None else axes, params, mesh, rules)
    opt = jax.eval_shape(tx.init, params)
    rep = NamedSharding(mesh, P())
    shardings = {"step": rep, "params": p_sh, "opt_state": mirror_shardings(opt, p_sh, mesh), "rng": rep,
                 "nonfinite": rep, "streak": rep}
    shapes = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params, "opt_state": opt,
              "rng": jax.ShapeDtypeStruct((2,), jnp.uint32), "nonfinite": jax.ShapeDtypeStruct((), jnp.int32),
              "streak": jax.ShapeDtypeStruct((), jnp.int32)}
    if model_state is not None:
        shardings["model_state"] = jax.tree.map(lambda _: rep, model_state)
        shapes["model_state"] = model_state
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
    return abstract, shardings


def init_state(params: Any, tx, seed: int, shardings: Any, model_state: Any = None) -> dict:
    """The step-0 state in its shardings. params (and model_state, see `abstract_state`): host (numpy) trees,
    identical on every process."""
    p_sh = shardings["params"]
    params = jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]), params, p_sh)
    opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
    rep = shardings["step"]

    def scalar(v, dt):
        return jax.make_array_from_callback((), rep, lambda _: np.asarray(v, dt))

    k_train = np.asarray(jax.random.split(jax.random.PRNGKey(seed))[1])
    out = {"step": scalar(0, np.int32), "params": params, "opt_state": opt_state,
           "rng": jax.make_array_from_callback((2,), rep, lambda idx: k_train[idx]),
           "nonfinite": scalar(0, np.int32), "streak": scalar(0, np.int32)}
    if model_state is not None:
        out["model_state"] = jax.tree.map(
            lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda i: np.asarray(x)[i]),
            model_state, shardings["model_state"])
    return out



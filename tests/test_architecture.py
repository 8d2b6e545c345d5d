"""The package layout holds: no import cycles, and the forbidden directions of ARCHITECTURE.md are never taken
(imports read from the source, function-local ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "samjax"

# importer prefix -> samjax modules it must never import (prefixes)
FORBIDDEN = {
    "samjax.models": ("samjax.training", "samjax.data", "samjax.infer", "samjax.amg", "samjax.weights",
                      "samjax.evaluate", "samjax.parallel", "samjax.transforms", "samjax.train", "samjax.convert"),
    "samjax.data": ("samjax.models", "samjax.training", "samjax.infer", "samjax.amg", "samjax.weights",
                    "samjax.evaluate"),
    "samjax.transforms": ("samjax.",),
    "samjax.parallel": ("samjax.",),
    "samjax.text": ("samjax.",),
    "samjax.weights": ("samjax.training", "samjax.data", "samjax.infer", "samjax.amg", "samjax.evaluate"),
    "samjax.infer": ("samjax.training", "samjax.amg", "samjax.evaluate", "samjax.train"),
    "samjax.amg": ("samjax.training", "samjax.evaluate", "samjax.train"),
    "samjax.training": ("samjax.amg", "samjax.train"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """samjax modules imported anywhere in the file (absolute imports; relative ones resolved)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == "samjax" or m.startswith("samjax.")}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in files.items():
        # keep only names that are modules of the tree (an imported function resolves to its module)
        edges[name] = {m if m in files else m.rsplit(".", 1)[0] for m in imports(path)} & set(files)
        edges[name].discard(name)
    return edges


def test_no_forbidden_imports():
    bad = [f"{a} imports {b}" for a, targets in graph().items() for b in targets
           for prefix, banned in FORBIDDEN.items()
           if (a == prefix or a.startswith(prefix + ".")) and any(b == x or b.startswith(x) for x in banned)
           and not b.startswith(prefix)]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ re-exporting its submodules is not a cycle of ideas: follow submodule -> package edges
    # only to the package's own modules, not back to the __init__ that lists them
    edges = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in edges.items()}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_have_teeth():
    assert "samjax.models.sam.config" in graph()["samjax.models.sam.image_encoder"]
    assert imports(PACKAGE / "training" / "step.py") >= {"samjax.training.prompts", "samjax.models"}

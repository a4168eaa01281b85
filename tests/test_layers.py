"""The package's import graph: every import points down a fixed order of layers, there are no
cycles (function-local imports included), and no private name crosses a module boundary.

Read from the source with `ast`, so the test needs nothing built and sees imports that only run
inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "bytecover"

# Lower numbers sit lower. A module may import modules of its own layer or below, never above.
LAYERS: dict[str, int] = {
    # leaves: no imports from the package except the native module
    "_core": 0, "sampling": 0, "speculation": 0, "utf8_mask": 0, "token_seqs": 0,
    "tokenizer_support": 0, "fim_templates": 0, "streaming": 0, "cache": 0, "concurrency": 0,
    # backends and registries
    "backends.protocol": 1, "backends.row_memo": 1, "backends.fast_linear": 1, "registry": 1, "ensemble_rules": 1, "healing": 1,
    "backends.hf": 2, "backends.vllm_engine": 1, "backends.vllm": 2, "backends": 2, "scheduler": 2, "gateway": 2, "install": 2, "token_tables": 2,
    # what states are built from
    "spec": 3, "convert": 3, "state_protocol": 3,
    "engine_io": 4, "models": 4,
    # states
    "full_state": 5, "choice": 5, "prefix_scoring": 5,
    "handoff": 6, "ensemble_state": 6, "ensemble_choice": 6, "byte_model": 6,
    # the facade and what drives it
    "byte_lm": 7,
    "ensemble": 8, "fim": 8,
    "cli": 9, "__init__": 9, "__main__": 9, "evaluation": 9, "server": 9,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    while module not in LAYERS and "." in module:
        module = module.rsplit(".", 1)[0]
    if module not in LAYERS:
        raise KeyError(f"module {module!r} has no layer in tests/test_layers.py: add it where it belongs")
    return LAYERS[module]


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """Absolute name (within the package) of what a relative or absolute import names."""
    if node.level == 0:
        name = node.module or ""
        return name[len("bytecover."):] if name.startswith("bytecover.") else ("" if name == "bytecover" else "<outside>")
    base = importer.split(".")
    is_package = (PACKAGE / importer.replace(".", "/") / "__init__.py").exists() or importer == "__init__"
    if importer == "__init__":
        base = []
    elif not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_module(name: str) -> bool:
    """Whether `name` (dotted, within the package) is a module or subpackage; `_core` is the
    native module (only its stub is in the source tree)."""
    path = PACKAGE / name.replace(".", "/")
    return path.with_suffix(".py").exists() or path.with_suffix(".pyi").exists() or path.is_dir()


def _edges() -> list[tuple[str, str, int, list[str]]]:
    """(importer, imported module, line, imported names) for every import inside the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(importer, node)
                if target == "<outside>":
                    continue
                names = [a.name for a in node.names]
                if target == "":  # `from . import x` / `from bytecover import x`: submodules or facade names
                    for name in names:
                        sub = name if _is_module(name) else "__init__"
                        out.append((importer, sub, node.lineno, [name]))
                else:
                    for name in names:
                        sub = f"{target}.{name}"
                        is_module = _is_module(sub)
                        out.append((importer, sub if is_module else target, node.lineno, [] if is_module else [name]))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("bytecover."):
                        out.append((importer, a.name[len("bytecover."):], node.lineno, []))
    return [e for e in out if e[1] != e[0]]


def test_every_import_points_down() -> None:
    bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)}) at line {line}"
           for a, b, line, _ in _edges() if _layer(b) > _layer(a)]
    assert not bad, "imports pointing up:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in _edges():
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_crosses_a_module() -> None:
    bad = [f"{a} imports {n} from {b} at line {line}" for a, b, line, names in _edges() for n in names
           if n.startswith("_") and n != "_core" and not n.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        _layer(_module_name(path))


def test_the_checker_sees_a_loop_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above must be able to fail: an upward edge and a cycle are both detected."""
    assert _layer("ensemble") > _layer("byte_lm") > _layer("gateway")
    edges = {(a, b) for a, b, _, _ in _edges()}
    assert ("byte_lm", "gateway") in edges  # a known downward import is seen
    assert ("fim", "byte_lm") in edges
    assert any(a == "cli" for a, _ in edges)  # function-local imports count too

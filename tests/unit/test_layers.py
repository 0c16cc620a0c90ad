"""The layers hold: every import in src/torchyard (top level, inside functions, under TYPE_CHECKING)
points to the same layer or one below, the module graph has no cycle, compute/ never imports
workspace/, and the in-job packages (launch/, tracking/) import only L0 and themselves.

The layers (docs/architecture.md)::

    L6  cli/, __main__
    L5  SDK: torchyard (the package), sdk, run, hyperdrive, sweeps.run; server/, models/ beside it
    L4  runtime/
    L3  compute/
    L2  workspace/, environments/, data/
    L1  spec/, sweeps/ (expressions, policies, config, yamlsweep), launch/, tracking/
    L0  errors, status, paths
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "torchyard"

LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (6, ("torchyard.cli", "torchyard.__main__")),
    (5, ("torchyard.sdk", "torchyard.experiment", "torchyard.run", "torchyard.hyperdrive", "torchyard.sweeps.run", "torchyard.server",
         "torchyard.models", "torchyard.integrations", "torchyard.remote", "torchyard.azure", "torchyard.azureml")),
    (4, ("torchyard.runtime",)),
    (3, ("torchyard.compute",)),
    (2, ("torchyard.workspace", "torchyard.environments", "torchyard.data")),
    (1, ("torchyard.spec", "torchyard.sweeps", "torchyard.launch", "torchyard.tracking")),
    (0, ("torchyard.errors", "torchyard.status", "torchyard.paths", "torchyard.records", "torchyard.limits")),
]
IN_JOB = ("torchyard.launch", "torchyard.tracking")


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    if module == "torchyard":
        return 5  # the curated public API re-exports the SDK
    for level, prefixes in LAYERS:  # most specific first: sweeps.run (L5) before sweeps (L1)
        if any(_under(module, p) for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to the table of docs/architecture.md)")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path) -> set[str]:
    """Every torchyard module ``path`` imports, wherever the import statement is."""
    module = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    known = {module_name(p) for p in SRC.rglob("*.py")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            # `from torchyard.compute import local` imports the module torchyard.compute.local
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if _under(name, "torchyard"):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py")) if "migrations" not in p.parts}


def test_every_module_has_a_layer() -> None:
    for module in graph():
        layer_of(module)


def test_imports_point_down() -> None:
    upward = [
        f"{m} (L{layer_of(m)}) imports {d} (L{layer_of(d)})"
        for m, deps in graph().items()
        for d in sorted(deps)
        if layer_of(d) > layer_of(m)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_cycles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in g:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_compute_never_imports_workspace() -> None:
    bad = [f"{m} imports {d}" for m, deps in graph().items() if _under(m, "torchyard.compute")
           for d in deps if _under(d, "torchyard.workspace")]
    assert not bad, bad


def test_in_job_code_imports_only_l0_and_itself() -> None:
    bad = []
    for m, deps in graph().items():
        own = next((p for p in IN_JOB if _under(m, p)), None)
        if own is None:
            continue
        bad += [f"{m} imports {d}" for d in deps if layer_of(d) != 0 and not _under(d, own)]
    assert not bad, bad


@pytest.mark.parametrize("source, expected", [
    ("from torchyard.runtime import submit", {"torchyard.runtime.submit"}),
    ("def f():\n    from torchyard.run import Run", {"torchyard.run"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from torchyard.sdk import Workspace", {"torchyard.sdk"}),
])
def test_the_scan_sees_every_kind_of_import(tmp_path: Path, source: str, expected: set[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    probe = SRC / "errors.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == probe else Path.read_bytes(self).decode())
    assert imports_of(probe) == expected

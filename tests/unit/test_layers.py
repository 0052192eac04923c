"""The package's layers (the README's map of the folders): each module imports only
from its own layer or the ones below it, at module level or inside a function.

    1 engram.state    2 engram.memory    3 engram (settings, clients, identity)
    4 engram.nodes    5 engram.graph     6 engram.apps

`engram/__init__.py`, the public face, sits on top: it names everything, lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import engram

LAYERS = {
    "engram.state": 1,
    "engram.memory": 2,
    "engram": 3,
    "engram.nodes": 4,
    "engram.graph": 5,
    "engram.apps": 6,
}
PACKAGE = Path(engram.__file__).parent  # as installed: every module under its real name


def layer_of(module: str) -> int:
    """The layer of a module: the longest package prefix in LAYERS that names it."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        if name != "engram":  # the public face imports everything on purpose
            found.append((name, path))
    return found


def engram_imports(path: Path) -> list[str]:
    imported = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names if a.name.split(".")[0] == "engram"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported += [node.module] if node.module.split(".")[0] == "engram" else []
    return imported


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda value: str(value))
def test_no_module_imports_from_a_layer_above_it(module: str, path: Path) -> None:
    above = [i for i in engram_imports(path) if layer_of(i) > layer_of(module)]
    assert not above, f"{module} (layer {layer_of(module)}) imports {above}"


def test_every_layer_has_modules() -> None:
    assert {layer_of(name) for name, _ in modules()} == set(LAYERS.values())

"""The import rule of the design (DESIGN §1), read from the source: leaf packages never import the engine, the
stages, reporting or diagnostics; the engine imports no stage. A module-level or a function-level import
counts alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mtlssl"
LEAVES = ("data", "tasks", "augment", "models", "ssl", "weighting", "objectives")
FORBIDDEN = {leaf: ("engine", "stages", "reporting", "diagnostics") for leaf in LEAVES} | {"engine": ("stages",)}


def mtlssl_imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every ``mtlssl.*`` name the file imports (``from a.b import c`` counts as ``a.b.c``),
    relative imports resolved against the file's package under ``root``."""
    package = path.relative_to(root.parent).parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = [*package[: len(package) - node.level + 1]] if node.level else []
            base += node.module.split(".") if node.module else []
            found += [(node.lineno, ".".join([*base, alias.name])) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("mtlssl.")]


def layer(module: str) -> str | None:
    """The layer of ``mtlssl.<layer>[...]`` (a top-level module such as ``objectives`` is its own layer)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def sources(name: str) -> list[Path]:
    target = PACKAGE / name
    return sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]


@pytest.mark.parametrize("source", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_the_design_allows(source: str) -> None:
    files = sources(source)
    assert files and all(f.is_file() for f in files), source
    broken = [f"{f.relative_to(PACKAGE.parent)}:{line} imports {module}" for f in files
              for line, module in mtlssl_imports(f) if layer(module) in FORBIDDEN[source]]
    assert not broken, "\n".join(broken)


def test_the_check_sees_imports_of_every_form(tmp_path: Path) -> None:
    """The checker itself: absolute, from-, relative and function-level imports are all found."""
    (tmp_path / "mtlssl" / "models").mkdir(parents=True)
    probe = tmp_path / "mtlssl" / "models" / "probe.py"
    probe.write_text("import mtlssl.engine.loop\nfrom mtlssl.stages import train_mtl\nfrom ..reporting import files\n"
                     "def f():\n    from mtlssl import engine\n")
    layers = [layer(module) for _, module in mtlssl_imports(probe, root=tmp_path / "mtlssl")]
    assert layers == ["engine", "stages", "reporting", "engine"]

"""Layering: runtime -> sync -> mmu -> scenarios -> explore -> report -> cli.

A module may import only from its own layer or lower ones.  The package façade
(tdpmmu/__init__.py, __main__.py) sits on top.  Checked by parsing every import.
"""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "tdpmmu"
ORDER = ["runtime", "sync", "mmu", "scenarios", "explore", "report", "cli"]
RANK = {name: i for i, name in enumerate(ORDER)}
TOP = len(ORDER)


def layer_of(parts: list[str]) -> int:
    """Rank of a module given its dotted path inside tdpmmu (e.g. ['sync', 'rcu'])."""
    if not parts or parts[0] in ("__init__", "__main__", "pytest_plugin"):
        return TOP
    return RANK[parts[0]]


def imports(path: pathlib.Path, root: pathlib.Path = SRC):
    rel = path.relative_to(root).with_suffix("").parts
    pkg = list(rel[:-1]) if rel[-1] != "__init__" else list(rel[:-1])
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else list(pkg)
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("tdpmmu"):
                mod = node.module.split(".")[1:]
            else:
                continue
            if not mod:       # "from . import x" at the package root
                mod = [node.names[0].name]
            yield node.lineno, mod
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tdpmmu."):
                    yield node.lineno, a.name.split(".")[1:]


def test_every_module_is_in_a_known_layer():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("").parts
        assert rel[0] in RANK or rel[0] in ("__init__", "__main__", "pytest_plugin"), path


def test_no_layer_imports_a_higher_one():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = list(path.relative_to(SRC).with_suffix("").parts)
        mine = layer_of(rel)
        for line, target in imports(path):
            if layer_of(target) > mine:
                bad.append(f"{path.relative_to(SRC)}:{line} imports tdpmmu.{'.'.join(target)}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_the_checker_would_catch_a_violation(tmp_path):
    # negative control for this test: a sync module importing explore must be flagged
    fake = tmp_path / "sync" / "probe.py"
    fake.parent.mkdir()
    fake.write_text("from ..explore import engine\nimport tdpmmu.report.text\nfrom ..runtime import traps\n")
    targets = [t for _, t in imports(fake, tmp_path)]
    assert targets == [["explore"], ["report", "text"], ["runtime"]]
    mine = layer_of(["sync", "probe"])
    assert [layer_of(t) > mine for t in targets] == [True, True, False]

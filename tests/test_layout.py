"""The package's shape: subpackages that follow the data flow, no import cycles, one registry of
studies that matches the files on disk, one schema for the comparison metrics."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

from bayes_smlm.studies.registry import STUDIES, study_module_name

import bayes_smlm
from bayes_smlm.compare.schema import SCALARS

ROOT = Path(bayes_smlm.__file__).parent
STUDIES_DIR = ROOT.parent / "studies"


def _module_files() -> dict[str, Path]:
    files = {}
    for base, package in ((ROOT, "bayes_smlm"), (STUDIES_DIR, "bayes_smlm.studies")):
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            files[".".join((package, *parts))] = path
    return files


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and not name.startswith(t + ".") and t != name}
    return out


def test_no_import_cycles_between_the_package_modules():
    files = _module_files()
    graph = {name: _imports(name, path, set(files)) for name, path in files.items()}
    visiting, done = set(), set()

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join(trail + [node])
        visiting.add(node)
        for target in sorted(graph[node]):
            visit(target, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_at_most_ten_modules_stay_flat_and_every_module_imports():
    flat = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(flat) <= 10, flat
    for module in pkgutil.walk_packages(bayes_smlm.__path__, "bayes_smlm."):
        importlib.import_module(module.name)


def test_every_study_file_is_registered_under_its_own_name():
    on_disk = {
        p.stem
        for p in STUDIES_DIR.glob("*.py")  # a study defines its presets
        if any(line.startswith("PRESETS") for line in p.read_text("utf-8").splitlines())
    }
    assert on_disk == {name.replace("-", "_") for name in STUDIES}
    for name in STUDIES:
        module = importlib.import_module(study_module_name(name))
        assert (
            Path(module.__file__).resolve()
            == (STUDIES_DIR / f"{name.replace('-', '_')}.py").resolve()
        )
        assert {"smoke", "cpu", "paper"} <= set(module.PRESETS) and callable(module.run)


def test_metric_keys_are_declared_once():
    assert len(SCALARS) == len({m.key for m in SCALARS.values()})
    assert all(m.label and m.doc for m in SCALARS.values())

"""The layers depend one way: deployments -> flows -> tasks -> catsdogs, and the library never on Prefect."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["deployments", "flows", "tasks", "catsdogs"]  # each may import only those after it


def imports(package: str) -> set[tuple[str, str]]:
    """(module, imported top-level name) for every import in PACKAGE, inside functions too."""
    found = set()
    for path in (ROOT / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((f"{package}/{path.name}", node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                found |= {(f"{package}/{path.name}", alias.name.split(".")[0]) for alias in node.names}
    return found


def test_dependencies_run_one_way():
    backwards = [(module, name) for i, package in enumerate(ORDER) for module, name in imports(package)
                 if name in ORDER[:i]]
    assert backwards == []


def test_the_library_does_not_import_prefect():
    assert [module for module, name in imports("catsdogs") if name == "prefect"] == []


def test_importing_tasks_changes_no_environment(monkeypatch):
    import importlib
    import os

    before = dict(os.environ)
    importlib.reload(importlib.import_module("tasks"))
    assert dict(os.environ) == before


def test_flows_holds_flows_only():
    """flows/ is where the flows are; the command line and the web app start and serve them from deployments/."""
    def defines_a_flow(path: Path) -> bool:
        return any(isinstance(node, ast.FunctionDef) and any(
            (d.func if isinstance(d, ast.Call) else d).id == "flow" for d in node.decorator_list
            if isinstance(d.func if isinstance(d, ast.Call) else d, ast.Name))
            for node in ast.walk(ast.parse(path.read_text())))

    modules = [path for path in (ROOT / "flows").glob("*.py") if path.name != "__init__.py"]
    assert modules and [path.name for path in modules if not defines_a_flow(path)] == []


def test_image_files_are_read_in_one_module_and_the_registry_does_not_import_training():
    """catsdogs/images.py goes from file to pixels; elsewhere Pillow only writes pictures (plots), and no other
    module decodes. The registry reads and writes cards: it needs no training code."""
    readers = {module for package in ORDER for module, name in imports(package) if name == "simplejpeg"}
    assert readers <= {"catsdogs/images.py"}
    for package in ORDER:
        for path in (ROOT / package).glob("*.py"):
            text = path.read_text()
            if path.name != "images.py":
                assert "Image.open(" not in text and "decode_image(" not in text, path
    registry = {node.module for node in ast.walk(ast.parse((ROOT / "catsdogs" / "registry.py").read_text()))
                if isinstance(node, ast.ImportFrom)}
    assert "catsdogs.train" not in registry

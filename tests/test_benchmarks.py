"""The benchmarks run by hand, never in the suite: each name one imports from the project must still exist, so
that a change to the library that renames or removes it fails here, not weeks later in a measurement. Logic of a
benchmark's own that needs no training (suite_cpu's kinds of process) is tested here too."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PROJECT_PACKAGES = {"catsdogs", "tasks", "flows", "deployments"}


def defined_names(path: Path) -> set[str]:
    """The names a module file defines or imports at its top level, read without running it."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def scripts(source: str) -> list[ast.AST]:
    """SOURCE's syntax tree and those of the Python scripts it holds as strings (run with `python -c`)."""
    tree = ast.parse(source)
    held = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                held.append(ast.parse(node.value))
            except SyntaxError:  # prose, not a script
                continue
    return [tree, *held]


def project_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each `from MODULE import NAME` of PATH, or of a script it runs, that names the project or
    another benchmark."""
    siblings = {other.stem for other in BENCHMARKS.glob("*.py")}
    return [(node.module, alias.name) for tree in scripts(path.read_text()) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            and (node.module.split(".")[0] in PROJECT_PACKAGES or node.module in siblings)
            for alias in node.names]


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda path: path.name)
def test_every_project_name_a_benchmark_imports_exists(path: Path):
    for module, name in project_imports(path):
        sibling = BENCHMARKS / f"{module}.py"
        if sibling.is_file():  # another benchmark: read, not run (some train when imported)
            assert name in defined_names(sibling), f"{path.name}: {module}.py has no {name}"
        else:
            assert exists(module, name), f"{path.name}: {module} has no {name}"


def exists(module: str, name: str) -> bool:
    """Whether `from MODULE import NAME` works: NAME defined in MODULE, or a submodule of it."""
    if hasattr(importlib.import_module(module), name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def test_a_missing_name_is_caught(tmp_path: Path, monkeypatch):
    """The check fails where it should: a benchmark importing a name the library lacks."""
    broken = tmp_path / "broken.py"
    broken.write_text("from catsdogs.views import no_such_view\nfrom validation_scores import no_such_score\n"
                      'ONE = """\nimport sys\nfrom timing import no_such_timer\n"""\n')
    assert project_imports(broken) == [("catsdogs.views", "no_such_view"), ("validation_scores", "no_such_score"),
                                       ("timing", "no_such_timer")]
    with pytest.raises(AssertionError, match="catsdogs.views has no no_such_view"):
        test_every_project_name_a_benchmark_imports_exists(broken)
    assert "no_such_score" not in defined_names(BENCHMARKS / "validation_scores.py")


def test_the_suites_cpu_is_told_apart_by_the_kind_of_process(monkeypatch):
    """benchmarks/suite_cpu.py names each process the suite starts by what it runs; paths holding "pytest" (every
    test's temporary folder) do not make a command a test worker."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from suite_cpu import by_kind, kind_of
    workdir = "--workdir /tmp/pytest-of-ci/pytest-0/popen-gw0/w"
    assert kind_of(f"/v/bin/python3.11 -m deployments.cli sweep {workdir}") == "catsdogs sweep"
    assert kind_of(f"/v/bin/python3.11 /repo/deployments/cli.py run {workdir}") == "catsdogs run"
    assert kind_of("/v/bin/python3.11 /repo/deployments/serve.py") == "catsdogs serve"
    assert kind_of("/v/bin/python3.11 -m uvicorn --factory prefect.server.api.server:create_app") == "Prefect server"
    assert kind_of("/v/bin/python3.11 -c from multiprocessing.spawn import spawn_main") == "Dask worker processes"
    assert kind_of("/v/bin/python3.11 -u -c import sys;exec(eval(sys.stdin.readline()))").startswith("pytest")
    assert kind_of("/v/bin/catsdogs predict cat.jpg") == "catsdogs predict"
    assert kind_of("/v/bin/python3.11 -c from deployments import cli") == "python3.11"  # a script, not a command
    assert kind_of("/usr/bin/sleep 5") == "sleep"
    assert kind_of("/v/bin/prefect --no-prompt deploy --all") == "Prefect commands"
    rows = by_kind({(1, 0.0): ("/v/bin/python -m pytest -q", 3.0), (2, 0.0): ("/v/bin/prefect server start", 1.0),
                    (3, 0.0): ("/v/bin/prefect server start", 0.0)})
    assert rows == [{"kind": "pytest and its workers (the in-process tests)", "processes": 1, "cpu_s": 3.0,
                     "share": 0.75}, {"kind": "Prefect server", "processes": 2, "cpu_s": 1.0, "share": 0.25}]

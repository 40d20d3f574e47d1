"""The shape of asymbp/report and of the package around it: no import cycle (imports inside
functions included), run-file names only from asymbp.runs, docs/aggregation.md's figure list =
the registry, and scripts that only call the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from asymbp import runs
from asymbp.registry import Registry
from asymbp.report.figures import FIGURES, Drawing, figure_table, register_figure

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "asymbp"
RUN_FILES = (runs.DONE, runs.CONFIG, runs.HISTORY, runs.METRICS, runs.CHECKPOINT, runs.LOG)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The asymbp modules that `path` imports anywhere in its body (functions included):
    `from a.b import c` counts a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return {name for name in found if name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as a path (first module repeated at the end), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_cycle_finder_finds_a_function_level_cycle():
    """The checker itself, on the shape the old aggregate.py <-> plots.py pair had."""
    graph = {"a.aggregate": {"a.runs"}, "a.plots": {"a.aggregate"}, "a.runs": set()}
    assert find_cycle(graph) == []
    graph["a.aggregate"].add("a.plots")  # aggregate imported plots inside main()
    assert find_cycle(graph) == ["a.aggregate", "a.plots", "a.aggregate"]


def test_the_package_has_no_import_cycle():
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    assert {"asymbp.report.cli", "asymbp.report.figures"} <= set(graph)
    assert find_cycle(graph) == []


#: The report's modules in the order of asymbp/report/__init__.py: each imports only earlier ones.
REPORT_ORDER = (
    "read", "labels", "summary", "select", "tables", "anchors", "robustness", "figures", "cli",
    "claims", "example",
)  # fmt: skip


def test_report_modules_import_only_the_ones_before_them():
    names = [f"asymbp.report.{name}" for name in REPORT_ORDER]
    assert set(names) | {"asymbp.report", "asymbp.report.__main__"} == {
        name for name in MODULES if name.startswith("asymbp.report")
    }
    for position, name in enumerate(names):
        imported = {m for m in imported_modules(MODULES[name]) if m.startswith("asymbp.report")}
        assert imported <= set(names[:position]), name


def string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is str}


# cli.py names the report's own files, one of which (history.csv, in long form) shares its name
# with a run's file.
READERS = sorted(p for p in (PACKAGE / "report").glob("*.py") if p.name != "cli.py")


@pytest.mark.parametrize("path", READERS, ids=lambda p: p.name)
def test_report_names_run_files_only_through_asymbp_runs(path):
    assert not string_constants(path) & set(RUN_FILES)


def test_the_docs_list_exactly_the_registered_figures():
    readme = (REPO / "docs" / "aggregation.md").read_text()
    assert figure_table() in readme
    listed = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `fig_")}
    assert listed == set(FIGURES)


def test_a_registered_figure_is_drawn_and_listed(tmp_path, monkeypatch):
    """Adding a figure is one function and its registration: it is drawn and listed."""
    from matplotlib.figure import Figure

    from asymbp.report.example import run_config, write_run
    from asymbp.report.figures import write_figures
    from asymbp.report.read import collect

    monkeypatch.setattr("asymbp.report.figures.FIGURES", Registry("figure"))

    @register_figure("fig_count", "runs per dataset")
    def count_figure(d: Drawing) -> Figure:
        fig = Figure()
        fig.subplots().bar(*zip(*d.done["dataset"].value_counts().items(), strict=True))
        return fig

    with pytest.raises(ValueError, match="registered twice"):
        register_figure("fig_count", "again")(count_figure)
    for seed, dataset in enumerate(("digits", "mnist")):
        write_run(tmp_path / dataset, run_config(dataset, "bp", None, "none", seed), 0.9)
    runs_frame, history = collect([tmp_path])
    written = write_figures(runs_frame, history, tmp_path)
    assert [p.name for p in written] == ["fig_count.png", "fig_count.pdf"]
    assert figure_table().splitlines()[-1] == "| `fig_count` | runs per dataset |"


@pytest.mark.parametrize("script", ["write_results.py", "make_aggregate_example.py"])
def test_scripts_only_call_the_package(script):
    path = REPO / "scripts" / script
    tree = ast.parse(path.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    modules = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert len(functions) <= 1, "a script holds at most a main() that calls the package"
    assert any(module.startswith("asymbp.report") for module in modules)
    assert not any("test" in module for module in modules), "no test fixture in a script"

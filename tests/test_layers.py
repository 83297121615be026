"""The house's import rules: packages and the modules of ``spatialmeta.learn`` import in one
direction (engines below the jobs, the jobs below the CLI), and library code never imports
Prefect, the CLI or the ``flows`` package.

Every import statement is read from the source (also those inside functions, which a
runtime check of ``sys.modules`` would miss), resolved to the spatialmeta module it
names (``from pkg import submodule`` counts as importing the submodule), and checked
against an ordered list of layers: a module may import its own layer and the ones below,
never one above; and the import graph of ``spatialmeta.learn`` has no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "spatialmeta"

# package layers, lowest first
PACKAGE_LAYERS = [
    {"_io", "_digest"},
    {"meta_analysis", "raster", "regions", "viz", "report"},
    {"tasks"},
    {"data", "learn", "screening"},
    # the application layer: the commands' work as stage functions (no engine imports it)
    {"jobs"},
    {"__init__"},
    {"cli"},
]
# the layers that compute; a job is above all of them
ENGINES = {
    "_io",
    "_digest",
    "meta_analysis",
    "raster",
    "regions",
    "viz",
    "report",
    "tasks",
    "data",
    "learn",
    "screening",
}

# the modules of spatialmeta.learn, lowest first (docs/architecture.md, "Learning, as built")
LEARN_LAYERS = [
    # windows: what a forecast knows at an origin, and how it is scored
    {"config", "metrics", "predictions", "losses", "features"},
    # one episode and the backbone
    {"episode", "model"},
    # statistics without a learner: baselines, references, the training loop
    {"baselines", "references", "loop"},
    # the algorithm families (registry, hooks)
    {"algorithms"},
    # meta-training and forecasting any registered learner
    {"train", "forecast"},
    # scoring and comparing methods
    {"evaluate", "compare"},
    # outputs (the forecast job is spatialmeta.jobs.forecast)
    {"output", "publish"},
    {"__init__"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").exists() or (ROOT.parent / rel).is_dir()


def imports_of(path: Path) -> set[str]:
    """spatialmeta modules and third-party top-level names imported anywhere in ``path``."""
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            # `from spatialmeta.learn import train` imports the submodule train
            for a in node.names:
                sub = f"{module}.{a.name}"
                if module.startswith("spatialmeta") and _is_module(sub):
                    out.add(sub)
    return out


def _sources():
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(layers, name: str) -> int:
    for i, group in enumerate(layers):
        if name in group:
            return i
    raise AssertionError(
        f"{name!r} is in no layer of tests/test_layers.py: add it to the layer it belongs to"
    )


def _unit(module: str, depth: int) -> str:
    """The layer unit of a dotted spatialmeta module name at ``depth`` (1: package, 2: learn)."""
    parts = module.split(".")
    return parts[depth] if len(parts) > depth else "__init__"


def test_import_reader_sees_function_level_and_submodule_imports():
    src = ROOT / "learn" / "publish.py"
    found = imports_of(src)
    assert "spatialmeta.learn.compare" in found  # imported inside a function
    assert "spatialmeta.learn.evaluate" in found
    init = imports_of(ROOT / "learn" / "__init__.py")
    assert "spatialmeta.learn.algorithms" in init


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_packages_import_downward_and_never_prefect(path):
    this = _module_name(path)
    unit = "__init__" if this == "spatialmeta" else _unit(this, 1)
    mine = _layer(PACKAGE_LAYERS, unit)
    for m in sorted(imports_of(path)):
        top = m.split(".")[0]
        assert top != "prefect", f"{this} imports {m}: library code never imports Prefect"
        assert top != "flows", (
            f"{this} imports {m}: the flows wrap spatialmeta, never the other way round (the "
            "CLI calls spatialmeta.jobs)"
        )
        if top != "spatialmeta" or m == "spatialmeta":
            continue
        other = _unit(m, 1)
        if other == unit:
            continue
        assert other != "cli", f"{this} imports the CLI ({m})"
        assert _layer(PACKAGE_LAYERS, other) <= mine, (
            f"{this} imports {m}: package {other!r} is above {unit!r} in PACKAGE_LAYERS"
        )
    if unit == "meta_analysis":
        heavy = {m.split(".")[0] for m in imports_of(path)} & {"torch", "rasterio", "rioxarray"}
        assert not heavy, f"{this} imports {sorted(heavy)}: meta_analysis knows no rasters or torch"


LEARN = sorted(p for p in _sources() if p.is_relative_to(ROOT / "learn"))


@pytest.mark.parametrize("path", LEARN, ids=lambda p: str(p.relative_to(ROOT)))
def test_learn_modules_import_downward(path):
    this = _module_name(path)
    unit = _unit(this, 2)
    mine = _layer(LEARN_LAYERS, unit)
    for m in sorted(imports_of(path)):
        if not m.startswith("spatialmeta.learn.") or m == this:
            continue
        other = _unit(m, 2)
        assert _layer(LEARN_LAYERS, other) <= mine, (
            f"{this} imports {m}: {other!r} is above {unit!r} in LEARN_LAYERS (an upward "
            "import; move the shared piece down a layer)"
        )


def test_learn_import_graph_has_no_cycle():
    graph = {}
    for path in LEARN:
        this = _module_name(path)
        graph[this] = {
            m for m in imports_of(path) if m.startswith("spatialmeta.learn") and m != this
        }
    # a package's __init__ re-exports its modules: the edge from a module to its own
    # package's __init__ would be the only "cycle"; there is none of those here, so the
    # graph is checked as it stands
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m in graph and not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if not state.get(n):
            visit(n)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_engines_import_no_job(path):
    this = _module_name(path)
    unit = "__init__" if this == "spatialmeta" else _unit(this, 1)
    if unit not in ENGINES:
        return
    jobs = sorted(m for m in imports_of(path) if m.startswith("spatialmeta.jobs"))
    assert not jobs, f"{this} (an engine) imports {jobs}: engines never import a job"


def test_cli_calls_jobs_not_flows():
    found = imports_of(ROOT / "cli.py")
    assert {m for m in found if m.startswith("spatialmeta.jobs.")} >= {
        "spatialmeta.jobs.aggregate", "spatialmeta.jobs.demo", "spatialmeta.jobs.forecast",
        "spatialmeta.jobs.pool",
    }  # fmt: skip
    assert not {m for m in found if m.split(".")[0] == "flows"}


def test_flows_are_wiring_over_the_jobs():
    flows = Path(__file__).resolve().parents[1] / "flows"
    for path in sorted(flows.glob("*.py")):
        for m in imports_of(path):
            if m.startswith("spatialmeta.") and m != "spatialmeta":
                assert m.startswith("spatialmeta.jobs"), (
                    f"{path.name} imports {m}: a flow wraps the stage functions of "
                    "spatialmeta.jobs, nothing below them"
                )


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _docstrings(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_engine_messages_name_arguments_not_cli_flags(path):
    # an engine's error names the argument (`test_start`); the CLI words it as its flag
    # (--test-start) in one table, spatialmeta.cli.FLAGS
    this = _module_name(path)
    unit = "__init__" if this == "spatialmeta" else _unit(this, 1)
    if unit not in ENGINES:
        return
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            found = _FLAG.findall(node.value)
            assert not found, (
                f"{this}:{node.lineno} names the CLI flag(s) {found} in a message; name the "
                "argument in backticks and map it in spatialmeta.cli.FLAGS"
            )

"""The import graph of ``sim/``: layers that only point down, no cycles, no imports hidden in
functions. The layers are the ones drawn in ``ARCHITECTURE.md``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "sim"

# lowest first; a module may import from its own layer or any layer below, never above
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"sim.ann", "sim.plugins", "sim.clock", "sim.numerics", "sim.rng", "sim.topk",
                    "sim.results",
                    "sim.scoring", "sim.stats", "sim.config", "sim.logs", "sim.progress",
                    "sim.threads", "sim.cpu_path"}),
    ("world", {"sim.world"}),
    ("market", {"sim.auction", "sim.bidding", "sim.pacing", "sim.autobidding", "sim.experiment"}),
    ("features", {"sim.features"}),
    ("models", {"sim.models"}),
    ("serving", {"sim.serving"}),
    ("lifecycle", {"sim.lifecycle", "sim.evaluation", "sim.parity_audit", "sim.campaigns"}),
    ("simulation", {"sim.build", "sim.opening", "sim.simulation"}),
    ("analysis", {"sim.recall", "sim.billing", "sim.delivery", "sim.summary", "sim.market_stats",
                  "sim.fit_targets"}),
    ("entry", {"sim.run", "sim.report", "sim.bench", "sim.__main__", "sim.api", "sim.readiness",
               "sim.diagnosis_bench", "sim.calibrate", "sim.direct_fit", "sim.emergent_fit", "sim.fit_check",
               "sim.launch"}),
]


def module_name(path: Path, root: Path = SIM.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = SIM.parent) -> list[tuple[str, int, bool]]:
    """(imported sim module, line, at module level) for every import of a ``sim`` module."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name == "sim" or name.startswith("sim."):
                out.append((name, node.lineno, id(node) in top))
    return out


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` names or lies in (``from sim.x import y``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(module: str) -> int:
    if module == "sim":  # the package root re-exports the notebook API (sim.api): an entry point
        return len(LAYERS) - 1
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it")


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SIM.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in paths}
    for m, p in paths.items():
        for name, _, _ in imports(p):
            target = resolve(name, set(paths))
            if target and target != m and target != "sim":
                edges[m].add(target)
    return edges


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_every_module_has_a_layer_and_imports_only_down() -> None:
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in graph().items() for t in sorted(targets)
              if layer_of(t) > layer_of(m)]
    assert upward == []


def test_no_cycle_between_modules_or_packages() -> None:
    edges = graph()
    assert cycle(edges) is None
    packages: dict[str, set[str]] = {}
    for m, targets in edges.items():
        packages.setdefault(package_of(m), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(m))
    assert cycle(packages) is None


def test_no_import_of_sim_inside_a_function() -> None:
    hidden = [f"{module_name(p)}:{line} imports {name}" for p in SIM.rglob("*.py")
              for name, line, top in imports(p) if not top]
    assert hidden == []


@pytest.mark.parametrize("edges, found", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], found: bool) -> None:
    assert (cycle(edges) is not None) == found


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a module of the world layer importing the simulation is caught."""
    src = tmp_path / "sim" / "world" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("from sim.simulation import Simulation\nfrom ..models import towers\n\n"
                   "def f():\n    import sim.run\n")
    found = imports(src, tmp_path)
    assert [(n, top) for n, _, top in found] == [
        ("sim.simulation", True), ("sim.simulation.Simulation", True), ("sim.models", True),
        ("sim.models.towers", True), ("sim.run", False)]
    assert layer_of("sim.simulation") > layer_of("sim.world.x")


# what makes a world: built only by sim/build.py (the one door: a run and the readiness check
# both go through build_world), each made nowhere else in sim/
WORLD_PARTS = ("build_marketplace", "train_initial_models", "Lifecycle", "Checkpoints",
               "CampaignDesk", "IndexPipeline", "Streams")
BUILDER = "sim.build"


def calls(path: Path) -> list[tuple[str, int]]:
    """(name, line) of every call of a bare or dotted name in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            out.append((name, node.lineno))
    return out


def test_only_the_builder_makes_a_world() -> None:
    """No module but ``sim.build`` builds a marketplace, trains the start-up models, or makes a
    lifecycle, a checkpoint cache, a campaign desk, an index pipeline or the run's streams."""
    made = [f"{module_name(p)}:{line} calls {name}" for p in SIM.rglob("*.py")
            if module_name(p) != BUILDER
            for name, line in calls(p) if name in WORLD_PARTS]
    assert made == []


def test_the_builder_check_sees_a_second_door(tmp_path: Path) -> None:
    src = tmp_path / "x.py"
    src.write_text("import sim.world.marketplace as m\n\ndef f(cfg, s):\n"
                   "    return m.build_marketplace(cfg, s), Lifecycle(cfg)\n")
    assert [n for n, _ in calls(src) if n in WORLD_PARTS] == ["build_marketplace", "Lifecycle"]


def test_metrics_json_is_written_in_one_place() -> None:
    """``metrics.json`` is written by ``sim.run`` alone, from the summary, whose typed parts
    (intervals, lifts, each arm's metrics, the offline results) become dicts through
    ``sim.results.to_json``: the JSON edge."""
    writers = []
    for p in SIM.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "write_json_atomic"
                    and "metrics.json" in ast.unparse(node.args[0])):
                writers.append(module_name(p))
    assert writers == ["sim.run"]
    summary = (SIM / "summary.py").read_text()
    assert "to_json(" in summary and "ArmMetrics(" in summary
    assert "offline.json()" in (SIM / "run.py").read_text()


def test_torch_is_seeded_only_from_named_streams() -> None:
    """torch's global generator is seeded in one place, ``sim.models.fitting.torch_draws``, which
    takes a named stream's seed and restores the global state after its block."""
    seeded = []
    for p in SIM.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("manual_seed", "seed", "set_rng_state")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                seeded.append(f"{module_name(p)}:{node.lineno}")
    assert [s.split(":")[0] for s in seeded] == ["sim.models.fitting"] * len(seeded)
    assert len(seeded) == 2  # torch_draws' manual_seed and RngState.restore's set_rng_state


def test_mypy_is_clean() -> None:
    """``mypy`` (configured in pyproject.toml) finds no error in ``sim/``."""
    pytest.importorskip("mypy")
    from mypy import api

    out, err, status = api.run(["--config-file", str(SIM.parent / "pyproject.toml"), str(SIM)])
    assert status == 0, out + err


def test_torch_is_imported_before_faiss() -> None:
    """``sim/__init__.py`` imports torch before any module imports faiss (why: its docstring)."""
    code = ("import sys, sim.__main__, sim.bench; m = list(sys.modules); "
            "print(m.index('torch') < m.index('faiss'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]

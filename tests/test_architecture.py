"""The package's seams, enforced on the import statements themselves (AST; function-level imports included).

* Truth vs belief: controllers, planners and predictors (``control/``, ``predict/``, ``plan/``) never import the
  ground-truth hardware model; they use the neutral :mod:`biscale.costmodel`. Named exceptions: the simulated
  profiler (it plays the GPU being measured) and the clairvoyant oracle controller (an upper bound, by design).
* The simulator never imports the CLI or the real-GPU control plane; nothing outside the CLI imports the CLI.
* The results package (layout, records, report) and live runs never import the evaluation (``biscale.evaluate``):
  a live run and ``biscale report`` write and read results without the simulated evaluation's machinery.
* Subpackages do not import each other in a cycle.
* ``import biscale.sim`` (and ``biscale.control``) loads neither NVML (``pynvml``) nor ``prometheus_client``.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

import biscale

PKG = Path(biscale.__file__).parent
BELIEF_SIDE = ("control", "predict", "plan")
#: Belief-side modules allowed to read the hardware model, and why.
TRUTH_READERS = {
    PKG / "predict" / "profilers" / "sim.py": "the simulated profiler measures the hardware model like a GPU",
    PKG / "control" / "oracle.py": "the clairvoyant oracle controller (an upper bound) prices batches exactly",
}


def module_name(path: Path, pkg: Path = PKG) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, pkg: Path = PKG) -> set[str]:
    """Every module (and ``module.name``) a file imports, anywhere in it."""
    names: set[str] = set()
    own = module_name(path, pkg)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def source_files(*subpackages: str, pkg: Path = PKG) -> list[Path]:
    roots = [pkg / s for s in subpackages] if subpackages else [pkg]
    return sorted(f for root in roots if root.exists() for f in root.rglob("*.py"))


def offenders(files: list[Path], forbidden: tuple[str, ...], pkg: Path = PKG) -> dict[str, list[str]]:
    out = {}
    for path in files:
        bad = sorted(n for n in imports(path, pkg) if any(n == f or n.startswith(f + ".") for f in forbidden))
        if bad:
            out[str(path.relative_to(pkg))] = bad
    return out


def subpackage(module: str, pkg: Path = PKG) -> str | None:
    """``biscale.sim.engine`` -> ``biscale.sim``; top-level modules are their own node; None outside biscale."""
    parts = module.split(".")
    if parts[0] != "biscale" or len(parts) < 2:
        return None
    node = ".".join(parts[:2])
    return node if (pkg / parts[1]).is_dir() or (pkg / f"{parts[1]}.py").is_file() else None


def subpackage_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in source_files(pkg=pkg):
        src = subpackage(module_name(path, pkg), pkg)
        if src is None:
            continue
        deps = graph.setdefault(src, set())
        for name in imports(path, pkg):
            dst = subpackage(name, pkg)
            if dst is not None and dst != src:
                deps.add(dst)
    return graph


# ------------------------------------------------------------------ truth vs belief
def test_belief_side_has_files_to_check() -> None:
    names = {f.name for f in source_files(*BELIEF_SIDE)}
    assert {"controllers.py", "state.py", "planner.py", "predictor.py", "costmodel.py"} <= names


def test_controllers_planners_and_predictors_do_not_import_the_hardware_model() -> None:
    files = [f for f in source_files(*BELIEF_SIDE) if f not in TRUTH_READERS]
    assert offenders(files, ("biscale.hardware",)) == {}


def test_the_neutral_cost_model_module_imports_no_implementation() -> None:
    assert offenders([PKG / "costmodel.py"], ("biscale.hardware", "biscale.predict", "biscale.sim")) == {}


# ------------------------------------------------------------------ layering
def test_the_simulator_does_not_import_the_cli_or_the_gpu_control_plane() -> None:
    assert offenders(source_files("sim"), ("biscale.cli", "biscale.gpu")) == {}


def test_nothing_outside_the_cli_imports_the_cli() -> None:
    files = [f for f in source_files() if not f.is_relative_to(PKG / "cli")]
    assert offenders(files, ("biscale.cli",)) == {}


def test_results_and_live_runs_do_not_import_the_evaluation() -> None:
    assert {"layout.py", "record.py", "report.py", "catalog.py"} <= {f.name for f in source_files("results")}
    assert offenders(source_files("results", "live"), ("biscale.evaluate",)) == {}
    assert offenders([PKG / "cli" / "report.py"], ("biscale.evaluate",)) == {}


def test_no_import_cycles_between_subpackages() -> None:
    graph = subpackage_graph()
    assert {"biscale.sim", "biscale.control", "biscale.costmodel", "biscale.cli"} <= set(graph)
    assert "biscale.control" in graph["biscale.sim"]  # the graph sees real edges
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle between subpackages: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize("package", ["biscale.sim", "biscale.control"])
def test_importing_loads_neither_nvml_nor_prometheus(package: str) -> None:
    code = (
        f"import sys, {package}; "
        "print(sorted(m for m in ('pynvml', 'prometheus_client', 'biscale.gpu', 'biscale.cli') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ the checks themselves
def fake_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "biscale"
    for rel, text in files.items():
        f = pkg / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return pkg


def test_the_checks_detect_violations(tmp_path: Path) -> None:
    pkg = fake_package(
        tmp_path,
        {
            "hardware/__init__.py": "",
            "cli/common.py": "from biscale.control.state import Slo\n",
            "control/state.py": "",
            "control/bad.py": (
                "from biscale.hardware import get_hardware\n"
                "def f():\n    import biscale.hardware.roofline\n    from biscale.cli.common import print_json\n"
            ),
        },
    )
    bad = pkg / "control" / "bad.py"
    assert {"biscale.hardware.get_hardware", "biscale.hardware.roofline", "biscale.cli.common"} <= imports(bad, pkg)
    assert list(offenders(source_files("control", pkg=pkg), ("biscale.hardware",), pkg)) == ["control/bad.py"]
    graph = subpackage_graph(pkg)
    assert graph["biscale.control"] == {"biscale.hardware", "biscale.cli"}
    with pytest.raises(graphlib.CycleError):  # control -> cli -> control
        tuple(graphlib.TopologicalSorter(graph).static_order())


def test_relative_imports_resolve(tmp_path: Path) -> None:
    pkg = fake_package(tmp_path, {"sim/probe.py": "from . import engine\nfrom ..control import state\n"})
    assert {"biscale.sim.engine", "biscale.control.state"} <= imports(pkg / "sim" / "probe.py", pkg)


def test_only_the_factory_reaches_the_oracle() -> None:
    """The oracle reads the truth; online controllers must not borrow from it."""
    users = sorted(
        str(path.relative_to(PKG))
        for path in source_files(*BELIEF_SIDE)
        if any(n == "biscale.control.oracle" or n.startswith("biscale.control.oracle.") for n in imports(path))
    )
    assert users == ["control/factory.py"]


def test_the_oracle_really_reads_the_truth() -> None:
    """The exception is needed (the oracle builds the hardware model when it is given none)."""
    assert "biscale.hardware.get_hardware" in imports(PKG / "control" / "oracle.py")

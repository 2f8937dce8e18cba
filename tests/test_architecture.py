"""Truth vs belief, enforced: controllers, planners and predictors never import the ground-truth hardware model.

Only the cost-model *interface* (``biscale.hardware.base``) may be imported by them. Two modules are allowed to
read the truth, by name: the simulated profiler (it plays the role of a real GPU being measured) and the clairvoyant
oracle (``control/oracle.py``: the bound every controller is compared against; no other controller may import it
except through the factory).
"""

from __future__ import annotations

import ast
from pathlib import Path

import biscale

PKG = Path(biscale.__file__).parent
ALLOWED_HARDWARE_MODULES = {"biscale.hardware.base"}
TRUTH_READERS = {PKG / "predict" / "profilers" / "sim.py", PKG / "control" / "oracle.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _belief_side_files() -> list[Path]:
    files = [*sorted((PKG / "control").rglob("*.py")), *sorted((PKG / "predict").rglob("*.py"))]
    return [f for f in files if f not in TRUTH_READERS]


def test_belief_side_has_files_to_check():
    names = {f.name for f in _belief_side_files()}
    assert {"controllers.py", "state.py", "predictor.py", "costmodel.py"} <= names


def test_controllers_and_predictors_do_not_import_the_hardware_model():
    offenders = {}
    for path in _belief_side_files():
        bad = sorted(
            name
            for name in _imports(path)
            if (name == "biscale.hardware" or name.startswith("biscale.hardware."))
            and not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_HARDWARE_MODULES)
        )
        if bad:
            offenders[str(path.relative_to(PKG))] = bad
    assert offenders == {}


def test_the_check_detects_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from biscale.hardware import get_hardware\nimport biscale.hardware.roofline\n")
    found = _imports(bad)
    assert "biscale.hardware.get_hardware" in found
    assert "biscale.hardware.roofline" in found


def test_only_the_factory_reaches_the_oracle():
    """The oracle reads the truth; online controllers must not borrow from it."""
    users = sorted(
        str(path.relative_to(PKG))
        for path in _belief_side_files()
        if any(
            name == "biscale.control.oracle" or name.startswith("biscale.control.oracle.") for name in _imports(path)
        )
    )
    assert users == ["control/factory.py"]


def test_the_oracle_really_reads_the_truth():
    """The exception is needed (the oracle builds the hardware model when it is given none)."""
    assert "biscale.hardware.get_hardware" in _imports(PKG / "control" / "oracle.py")

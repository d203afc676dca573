"""keylib's rooms show its layers: only keylib.spark knows Spark, only keylib.training
imports TensorFlow (the contracts in pyproject.toml's [tool.importlinter], checked by the
real `lint-imports`), every module is in a contract, and no module or function grows past
what one reading takes in."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "keylib"
# The rooms: each contract protects one of them from everything outside it.
ROOMS = {"keylib.spark", "keylib.training"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.is_file(), f"{lint} missing: the test extra installs import-linter (./submit.sh setup)"
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_module_outside_a_room_is_named_by_its_contract():
    """A new module of the flat core (or a new room) must be placed in the contracts, or
    they would not check it."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    top = {f"keylib.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top |= {f"keylib.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    guarded = {}  # room -> the modules its contract forbids to import it
    for contract in contracts:
        [room] = [m for m in contract["forbidden_modules"] if m.startswith("keylib.")]
        guarded[room] = set(contract["source_modules"])
    assert set(guarded) == ROOMS
    for room, sources in guarded.items():
        assert sources == top - {room}, (room, sorted(top - {room} - sources), sorted(sources - top))


def _long_functions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                             f"({node.end_lineno - start + 1} lines)")
    return found


def test_no_module_or_function_is_too_long_to_read_at_once():
    modules = sorted(PACKAGE.rglob("*.py"))
    too_long = [f"{p.relative_to(REPO)} ({n} lines)" for p in modules
                if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    functions = [f for p in modules for f in _long_functions(p)]
    assert not functions, f"functions over {MAX_FUNCTION_LINES} lines: {functions}"

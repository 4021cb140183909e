"""The rule of layers (docs/architecture.md): apps -> twin -> sensors -> physics, never back.

Checked with import-linter's contracts in pyproject.toml, plus what it cannot see: no
underscore (private) name is imported from another module.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("physics", "sensors", "twin", "apps")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports (import-linter, a test dependency) is not installed")
    env = {"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent), "HOME": str(root)}
    return subprocess.run(
        [exe, str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_tree(dest: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_layer_contracts_hold():
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" in out.stdout and " 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("sensors/base.py", "from twin.units import SpecError", "no layer reaches back"),
        ("physics/gpu.py", "import sensors.errors", "no layer reaches back"),
        ("physics/coolant.py", "import pandas", "physics is pure"),
        ("apps/data.py", "from physics import facility", "apps presents through twin"),
    ],
)
def test_a_reaching_import_breaks_the_contracts(tmp_path, module, line, contract):
    root = _copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    out = _lint_imports(root)
    assert out.returncode != 0, out.stdout
    broken = [s for s in out.stdout.splitlines() if s.endswith("BROKEN")]
    assert any(contract in s for s in broken), out.stdout


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_imports(path: Path) -> list[str]:
    """Private names of another module used in ``path``: imported, or read off that module."""
    found, aliases = [], set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                aliases.add(a.asname or a.name)
                if any(_private(p) for p in [*node.module.split("."), a.name]):
                    found.append(f"{path.name}:{node.lineno} {node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in PACKAGES:
                    aliases.add(a.asname or top)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    found = [hit for p in files for hit in _private_imports(p)]
    assert found == []


def test_public_api_resolves():
    import twin

    assert set(twin.__all__) >= {"load_spec", "simulate", "calibrate", "replay", "compare"}
    for name in twin.__all__:
        assert callable(getattr(twin, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        twin.nope  # noqa: B018


@pytest.mark.parametrize(
    ("needle", "owner"),
    [("jax_enable_x64", "physics/__init__.py"), ("273.15", "physics/constants.py")],
)
def test_one_place_owns_float64_and_the_constants(needle, owner):
    """Code (not comments or docstrings) sets float64 or writes 0 °C in kelvin in one file."""
    import io
    import tokenize

    holders = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            if any(
                t.type in (tokenize.NUMBER, tokenize.STRING) and t.string.strip("\"'") == needle
                for t in tokens
            ):
                holders.add(path.relative_to(ROOT).as_posix())
    assert holders == {owner}

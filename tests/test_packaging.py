"""The distribution ships what the code needs and declares what it imports (static checks).

The full check, a wheel installed in a fresh virtual environment and run from ``/``, is in
``.ci/run``; these are the fast parts of it: every package folder is listed in pyproject.toml,
every data file matches a package-data glob, and every third-party import of the package is a
declared runtime dependency (and every runtime dependency is used).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_ROOTS = ("physics", "sensors", "twin", "apps")

#: Runtime dependencies that the package needs without importing them by name.
INDIRECT = {
    "jaxlib": "jax's compiled backend",
    "netcdf4": "xarray's engine for to_netcdf(group=...) in twin demo and the sensor store",
}


def _source_folder(package: str) -> Path:
    mapped = SETUPTOOLS.get("package-dir", {})
    if package in mapped:
        return ROOT / mapped[package]
    return ROOT / package.replace(".", "/")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0))


def _python_files():
    for root in PACKAGE_ROOTS:
        yield from (ROOT / root).rglob("*.py")


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> files importing it, for modules outside stdlib and project."""
    found: dict[str, set[str]] = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in PACKAGE_ROOTS:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_package_folder_is_listed():
    listed = set(SETUPTOOLS["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for root in PACKAGE_ROOTS
        for init in (ROOT / root).rglob("__init__.py")
    }
    assert on_disk - listed == set(), "package folders missing from [tool.setuptools] packages"
    for package in listed:
        assert (_source_folder(package) / "__init__.py").is_file(), package


def test_every_data_file_matches_a_package_data_glob():
    globs = SETUPTOOLS["package-data"]
    for package in SETUPTOOLS["packages"]:
        folder = _source_folder(package)
        nested = {p.parent for p in folder.rglob("__init__.py") if p.parent != folder}
        for path in folder.rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc"):
                continue
            if any(parent in nested for parent in path.parents):
                continue  # belongs to a subpackage, checked with it
            relative = path.relative_to(folder).as_posix()
            patterns = globs.get(package, [])
            assert any(fnmatch.fnmatch(relative, g) for g in patterns), (package, relative)


def test_imports_are_declared_dependencies_and_dependencies_are_used():
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for module, files in sorted(_third_party_imports().items()):
        dists = {_normalise(d) for d in providers.get(module, [])}
        assert dists & declared, f"{module} (imported by {sorted(files)}) is not a dependency"
        imported |= dists & declared
    unused = declared - imported - set(INDIRECT)
    assert unused == set(), f"runtime dependencies never imported by the package: {unused}"

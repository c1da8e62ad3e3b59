"""Declared dependencies match the imports: every module of harness/, scenarios/ and baselines/
imports with the base install alone (the extras' packages imported only inside functions), and
every third-party package imported at module level is a base dependency of pyproject.toml."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("harness", "scenarios", "baselines")
EXTRA_IMPORTS = ("av", "avalanche", "ray", "submitit", "matplotlib")
"""The import names the extras install (harness.registry.EXTRAS)."""
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn",
                "avalanche": "avalanche-lib", "cv2": "opencv-python"}
"""Import name -> distribution name, where they differ (else: the same, lower case)."""

# Imports of the extras fail in the child, as without them installed.
BLOCK = f"""
import importlib.abc, sys
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_IMPORTS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
for _m in [m for m in sys.modules if m.split(".")[0] in {EXTRA_IMPORTS!r}]:
    del sys.modules[_m]
"""

# One interpreter imports the base dependencies once, then forks a child per module:
# each child imports its module into a state without any module of this project.
FORKED = BLOCK + """
import json, os, sys, traceback
import numpy, pandas, rich, safetensors, scipy.stats, torch, torchvision, typer  # noqa: F401
failed = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(name)
            msg = ""
        except BaseException:
            msg = traceback.format_exc(limit=-3)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    if chunks:
        failed[name] = b"".join(chunks).decode()
print(json.dumps(failed))
"""


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _sources() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def test_every_module_imports_without_the_extras() -> None:
    names = modules()
    assert len(names) > 50 and "harness.cli" in names and "baselines.avalanche_adapter" in names
    # `avalanche` last: the extras really are blocked (it is installed in the test env).
    proc = subprocess.run([sys.executable, "-c", FORKED, *names, "avalanche"],
                          capture_output=True,
                          text=True, timeout=600, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "HARNESS_THREADS": "1",
                               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "(blocked)" in failed.pop("avalanche", "")
    assert failed == {}, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


@pytest.mark.slow
@pytest.mark.parametrize("name", modules())
def test_each_module_imports_in_a_fresh_interpreter(name: str) -> None:
    subprocess.run([sys.executable, "-c", f"{BLOCK}\nimport {name}"], check=True, timeout=300,
                   cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HARNESS_THREADS": "1",
                                  "PYTHONPATH": str(ROOT)})


def _dist(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    """(base dependencies, extras' packages) of pyproject.toml, as distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_dist(s) for s in project["dependencies"]}
    extras = {_dist(s) for name, specs in project["optional-dependencies"].items()
              if name != "dev" for s in specs}
    return base, extras


def _guarded(handlers: list[ast.ExceptHandler]) -> bool:
    """A try whose handler catches ImportError: an import with a fallback."""
    names = {"ImportError", "ModuleNotFoundError", "Exception"}
    for h in handlers:
        types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if h.type is None or any(isinstance(t, ast.Name) and t.id in names for t in types):
            return True
    return False


def third_party_imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(top-level import name, line, at module level) of every third-party import that is not
    under `if TYPE_CHECKING:` nor inside a try with an ImportError fallback."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, ast.Try) and _guarded(node.handlers):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if node.level == 0 else [])
            for m in mods:
                top = m.split(".")[0]
                if top and top not in sys.stdlib_module_names and top not in PACKAGES:
                    found.append((top, node.lineno, module_level))
            return
        inner = module_level and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return found


def test_module_level_imports_are_base_dependencies_and_extras_are_lazy() -> None:
    base, extras = declared()
    assert "pillow" in base and {"ray", "matplotlib", "submitit", "av", "avalanche-lib"} <= extras
    problems = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        for top, line, module_level in third_party_imports(ast.parse(path.read_text())):
            dist = DISTRIBUTION.get(top, top.lower().replace("_", "-"))
            if module_level and dist not in base:
                kind = "an extra's package" if dist in extras else "not declared"
                problems.append(f"{rel}:{line}: module-level import of {top} ({kind}; import "
                                "it inside the function that needs it, or declare it)")
            elif dist not in base | extras:
                problems.append(f"{rel}:{line}: {top} is not declared in pyproject.toml")
    assert problems == [], "\n".join(problems)


def test_the_scan_sees_what_it_must() -> None:
    tree = ast.parse("import torch\nimport ray.util\nfrom PIL import Image\n"
                     "def f():\n    import matplotlib\n"
                     "if TYPE_CHECKING:\n    import pandas\n"
                     "try:\n    import click\nexcept ImportError:\n    pass\n"
                     "class C:\n    import scipy\n"
                     "from . import x\nimport os\nfrom harness import cli\n")
    assert third_party_imports(tree) == [("torch", 1, True), ("ray", 2, True), ("PIL", 3, True),
                                         ("matplotlib", 5, False), ("scipy", 13, True)]

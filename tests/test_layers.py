"""The two layers: the core (`linfilt`, what users import) never imports the reproduction
(`linfilt.paper`), which reaches the core only through plugin registrations; and no module hides
an import of linfilt's own code inside a function (a late import is how package loops hide)."""
import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import linfilt
from linfilt import plugins
from linfilt.paper import data, models, plugin

PACKAGE = Path(linfilt.__file__).parent
CORE = sorted(p for p in PACKAGE.rglob("*.py") if "paper" not in p.relative_to(PACKAGE).parts)
EVERY = sorted(PACKAGE.rglob("*.py"))
# The one deliberate late import: `linfilt.unlearn` needs torch, numpy-only users should not pay for it.
LATE_IMPORTS_ALLOWED = {("__init__.py", "linfilt.pytorch"), ("__init__.py", "linfilt.modelio")}


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_never_imports_the_reproduction(path):
    tree = ast.parse(path.read_text())
    bad = [f"line {node.lineno}: {name}" for node, name in _imports(tree) if name.startswith("linfilt.paper")]
    strings = [f"line {n.lineno}: {n.value!r}" for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("linfilt.paper")]
    assert not bad + strings, f"{path.name} reaches into the reproduction layer: {bad + strings}"


@pytest.mark.parametrize("path", EVERY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_late_imports_of_linfilt_modules(path):
    tree = ast.parse(path.read_text())
    late = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node, name in _imports(fn):
                if name.split(".")[0] == "linfilt" and (path.name, name) not in LATE_IMPORTS_ALLOWED:
                    late.append(f"line {node.lineno}: {name}")
    assert not late, f"{path.relative_to(PACKAGE)} imports linfilt modules inside functions: {late}"


def _fresh_modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_the_core_loads_nothing_of_the_reproduction():
    loaded = _fresh_modules("import linfilt, linfilt.filtration, linfilt.audit, linfilt.sklearn, "
                            "linfilt.pytorch, linfilt.modelio, linfilt.cli.unlearn, linfilt.cli.audit")
    assert not {m for m in loaded if m.startswith("linfilt.paper")}


def test_the_audit_command_loads_neither_torch_nor_the_reproduction():
    loaded = _fresh_modules("from linfilt.cli import build_parser; build_parser('audit')")
    assert "torch" not in loaded
    # the plugin's registrations (names only) are all of the reproduction that it may load
    assert {m for m in loaded if m.startswith("linfilt.paper")} <= {"linfilt.paper", "linfilt.paper.plugin"}


def test_the_plugin_registers_what_the_reproduction_has():
    plugins.load_plugins()
    assert set(plugin.ARCHITECTURES) == set(models.ARCHITECTURES)
    assert set(plugin.DATASETS) == set(data.NAMES)
    for name in plugin.COMMANDS:
        module = __import__(plugins.COMMANDS[name], fromlist=["register"])
        assert inspect.isfunction(module.register)
    assert plugins.architecture("mlp") is models.build
    assert plugins.dataset("digits") is data.load


def test_an_unknown_architecture_names_the_known_ones():
    with pytest.raises(linfilt.LinfiltError, match="unknown architecture 'vgg'.*att_resnet"):
        plugins.architecture("vgg")

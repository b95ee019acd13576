"""Import direction between the project's packages, read from the source with ``ast``.

Imports run one way: ``data`` -> ``models`` -> ``eval`` -> entry points (``prepare/``, ``SFT/``,
``RL/``, ``scripts/``). A library imports only its own layer and the ones before it; an entry point
imports any library but never another entry-point module (nothing in ``scripts/`` is a helper
that other entry points share). Every import counts, including the ones inside functions and
under ``if TYPE_CHECKING:``. On top of the direction, no module imports a project module inside
a function or class body: such an import is how a cycle hides.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LIBRARIES = ("data", "models", "eval")
ENTRY_POINTS = ("prepare", "SFT", "RL", "scripts")
PROJECT = (*LIBRARIES, *ENTRY_POINTS, "tests")

ALLOWED: dict[str, frozenset[str]] = {
    "data": frozenset({"data"}),
    "models": frozenset({"data", "models"}),
    "eval": frozenset({"data", "models", "eval"}),
    **{ep: frozenset(LIBRARIES) for ep in ENTRY_POINTS},
}
"""Top-level package of the importing module -> top-level packages it may import."""

DEFERRED_FOR_THREAD_PINNING: frozenset[str] = frozenset(
    {"scripts/bench_metrics.py", "scripts/bench_motion_repr.py"}
)
"""Benchmarks that set ``OMP/OPENBLAS/MKL_NUM_THREADS`` from their config before numpy loads (BLAS
reads it at load time), so their project imports follow inside ``main``. Only the function-local
rule is waived for them, and only entry points may be listed: nothing imports an entry point, so
no cycle can hide there."""

CONTRACT_ENTRY_MODULES: frozenset[str] = frozenset({"RL.rewards"})
"""Entry-point modules whose location api-contract.md fixes and that other entry points may import:
the GRPO rewards (``RL/rewards.py``) are used by ``RL/train_grpo.py`` and ``scripts/bench_rewards.py``."""

FUNCTION_LOCAL = "function-local import of a project module"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}: {self.problem}"


def project_files() -> list[Path]:
    """Every ``.py`` file under the library and entry-point folders, sorted."""
    return sorted(p for top in (*LIBRARIES, *ENTRY_POINTS) for p in (ROOT / top).rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute dotted modules an import statement reaches.

    ``from a.b import c`` gives ``a.b``; ``from a import b`` (a top-level package) gives ``a.b``.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        prefix = ".".join([*base, *([node.module] if node.module else [])])
    else:
        prefix = node.module or ""
    if "." in prefix:
        return [prefix]
    return [f"{prefix}.{alias.name}" if alias.name != "*" else prefix for alias in node.names]


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import with whether it sits inside a function or class body."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, local))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            visit(child, local or nested)

    visit(tree, False)
    return found


def check_file(path: Path) -> list[Violation]:
    """The layering violations of one source file."""
    rel = path.relative_to(ROOT).as_posix()
    module = _module_name(path)
    layer = module.split(".")[0]
    tree = ast.parse(path.read_text(), filename=rel)
    out: list[Violation] = []
    for node, local in _imports(tree):
        for target in _imported_modules(node, module, path.name == "__init__.py"):
            top = target.split(".")[0]
            if top not in PROJECT:
                continue
            if top not in ALLOWED[layer] and not (layer in ENTRY_POINTS and target in CONTRACT_ENTRY_MODULES):
                where = "an entry point" if layer in ENTRY_POINTS else f"the {layer} layer"
                out.append(
                    Violation(rel, node.lineno, target, f"{where} may import only {sorted(ALLOWED[layer])}")
                )
            if local:
                out.append(Violation(rel, node.lineno, target, FUNCTION_LOCAL))
    return out


def test_import_directions_and_no_function_local_project_imports():
    files = project_files()
    assert len(files) > 40 and any(p.name == "prompts.py" for p in files)  # the scan found the tree
    assert all(f.split("/")[0] in ENTRY_POINTS for f in DEFERRED_FOR_THREAD_PINNING)
    violations = [
        v
        for p in files
        for v in check_file(p)
        if not (v.path in DEFERRED_FOR_THREAD_PINNING and v.problem == FUNCTION_LOCAL)
    ]
    remaining = [str(v) for v in violations]
    assert not remaining, f"{len(remaining)} layering violation(s):\n" + "\n".join(remaining)


def test_checker_catches_each_kind_of_violation(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    files = {
        "data/a.py": "from models.vqvae import MotionVQVAE\n",
        "data/b.py": "def f():\n    from data.layout import read_split\n",
        "models/c.py": "from . import d\nfrom ..eval import metrics\n",
        "prepare/x.py": "from prepare.y import main\nimport eval.harness\n",
        "scripts/z.py": "import numpy\nfrom data import prompts\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from scripts.w import W\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = sorted(str(v) for name in files for v in check_file(tmp_path / name))
    assert found == [
        "data/a.py:1: imports models.vqvae: the data layer may import only ['data']",
        "data/b.py:2: imports data.layout: function-local import of a project module",
        "models/c.py:2: imports eval.metrics: the models layer may import only ['data', 'models']",
        "prepare/x.py:1: imports prepare.y: an entry point may import only ['data', 'eval', 'models']",
        "scripts/z.py:5: imports scripts.w: an entry point may import only ['data', 'eval', 'models']",
    ]

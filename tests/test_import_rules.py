"""What may import what (docs/ARCHITECTURE.md): a model family imports only the shared model
modules and itself; a task imports a family only through its public name, never its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODELS = SRC / "videogen" / "models"
TASKS = SRC / "videogen" / "tasks"

# Shared by every family: the layer library, the losses, the weight reader and the builder.
SHARED_MODELS = ("layers", "losses", "checkpoint_io", "build")
# Outside models/, a family may use only the project's error types.
FAMILY_MAY_IMPORT = ("videogen.errors",)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str) -> list[str]:
    """Every videogen module `source` imports (at any depth, lazily or not); relative imports
    resolved against `module`."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            names.append(base)
    return [name for name in names if name.startswith("videogen")]


def family_of(module: str) -> str | None:
    """The model family a `videogen.models.*` module belongs to (None: a shared module).

    A family is a package (`models/vptr/`) or a module with its helpers named after it
    (`models/vivit.py`, `models/vivit_init.py`)."""
    parts = module.split(".")
    if len(parts) < 3 or parts[:2] != ["videogen", "models"]:
        return None
    top = parts[2]
    return None if top in SHARED_MODELS else top.split("_")[0]


def family_violations(module: str, imports: list[str]) -> list[str]:
    own = family_of(module)
    allowed = [f"videogen.models.{name}" for name in SHARED_MODELS] + list(FAMILY_MAY_IMPORT)
    return [
        name
        for name in imports
        if family_of(name) != own
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    ]


def task_violations(imports: list[str]) -> list[str]:
    """Imports of a family's internals: anything below `videogen.models.<family>`."""
    return [name for name in imports if family_of(name) is not None and len(name.split(".")) > 3]


def sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


FAMILY_FILES = [path for path in sources(MODELS) if family_of(module_name(path))]


def test_the_families_are_found() -> None:
    families = {family_of(module_name(path)) for path in FAMILY_FILES}
    assert {"vit", "vivit", "vptr", "vid2vid", "diffusion", "vgan"} <= families


@pytest.mark.parametrize("path", FAMILY_FILES, ids=lambda p: module_name(p))
def test_a_family_imports_only_shared_model_code_and_itself(path: Path) -> None:
    module = module_name(path)
    bad = family_violations(module, imported_modules(path.read_text(), module))
    assert not bad, f"{module} imports {bad}: a family may import only {SHARED_MODELS} and itself"


@pytest.mark.parametrize("path", sources(TASKS), ids=lambda p: module_name(p))
def test_a_task_imports_no_family_internals(path: Path) -> None:
    module = module_name(path)
    bad = task_violations(imported_modules(path.read_text(), module))
    assert not bad, f"{module} imports {bad}: import the family's public names instead"


def test_the_rules_catch_what_they_forbid() -> None:
    """The checks above would fail on the imports they exist to stop."""
    vptr_importing_vivit = "from videogen.models.vivit import ViViT\nfrom ..layers import Block\n"
    imports = imported_modules(vptr_importing_vivit, "videogen.models.vptr.far")
    assert imports == ["videogen.models.vivit", "videogen.models.layers"]
    assert family_violations("videogen.models.vptr.far", imports) == ["videogen.models.vivit"]
    assert family_violations("videogen.models.vptr.far", ["videogen.tasks.base"]) == [
        "videogen.tasks.base"
    ]
    assert family_violations("videogen.models.vivit", ["videogen.models.vivit_init"]) == []
    task_source = "def f():\n    from videogen.models.vptr.far import VPTRFAR\n"
    assert task_violations(imported_modules(task_source, "videogen.tasks.x")) == [
        "videogen.models.vptr.far"
    ]
    assert task_violations(["videogen.models.vptr", "videogen.models.layers.blocks"]) == []

"""The layout shows the architecture: the library never imports the applications."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "captum_mamba"
#: Application modules and packages (top-level names under captum_mamba).
APPLICATIONS = {
    "evaluation",
    "compare",
    "default",
    "insights",
    "cli",
    "images",
}


def _top_level(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("captum_mamba."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "captum_mamba":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("captum_mamba."))
    return names


def test_library_modules_import_no_application():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _top_level(path) in APPLICATIONS:
            continue
        wrong = _imported(ast.parse(path.read_text())) & APPLICATIONS
        if wrong:
            offenders.append(f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}")
    assert not offenders, offenders


def test_no_module_re_implements_a_hugging_face_model_forward():
    # the package patches mixers, norms and blocks; a *ForCausalLM / *Model forward always runs as it is
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        assert "cache_params=" not in text, f"{path.relative_to(PACKAGE)} binds a transformers argument by name"
        assert "model.backbone(" not in text, f"{path.relative_to(PACKAGE)} calls a backbone in place of the model"

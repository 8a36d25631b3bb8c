"""The public surface of chutes_subnet.inference: explicit, complete ``__all__`` lists."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

import chutes_subnet.inference as inference

MODULES = ["backend_factory", "base", "embedded", "embeddings", "generation", "model",
           "requests", "responses", "tokenizer", "upstream"]


def _top_level_public_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_") and name != "__all__"}


@pytest.mark.parametrize("name", MODULES)
def test_module_all_lists_exactly_its_public_definitions(name):
    module = importlib.import_module(f"chutes_subnet.inference.{name}")
    assert set(module.__all__) == _top_level_public_names(inspect.getsource(module))
    assert len(module.__all__) == len(set(module.__all__))


def test_package_exports_resolve():
    for name in inference.__all__:
        assert getattr(inference, name) is not None
    assert inference.DEFAULT_MODEL_ID == "chutes-subnet/tiny-byte-lm"
    assert inference.DEFAULT_SEED == 1234
    assert issubclass(inference.InvalidRequestError, ValueError)

"""The hand-written stubs list exactly the core's tables."""

from __future__ import annotations

import ast
from pathlib import Path

import model_manager as mm
from model_manager import _model_manager as core

STUB = Path(mm.__file__).with_name("__init__.pyi")


def _classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def test_the_stub_declares_every_error_class_in_the_core_order() -> None:
    declared = [
        name
        for name, node in _classes().items()
        if any(isinstance(b, ast.Name) and b.id == "ModelManagerError" for b in node.bases)
    ]
    assert declared == [name for name, _ in core.ERROR_CODES]


def test_the_stub_state_is_the_core_table() -> None:
    node = _classes()["State"]
    members = [
        (stmt.targets[0].id, stmt.value.value)  # type: ignore[attr-defined]
        for stmt in node.body
        if isinstance(stmt, ast.Assign)
    ]
    assert members == [(s.upper(), s) for s in core.STATES]
    assert [(m.name, m.value) for m in mm.State] == members


def test_py_typed_ships() -> None:
    assert STUB.with_name("py.typed").exists()
    assert STUB.with_name("_model_manager.pyi").exists()

"""The built-in templates' one build entry (`templates/builtin.py`), without building anything."""

from __future__ import annotations

import pytest

from sandhive.cli.builtin_cmd import BuiltinName, builtins
from sandhive.templates import base, builtin, code_interpreter


def test_every_name_the_cli_takes_is_a_builtin() -> None:
    assert {name: b.template_id for name, b in builtins().items()} == {
        "base": base.TEMPLATE_ID, "code-interpreter": code_interpreter.TEMPLATE_ID}
    assert {n.value for n in BuiltinName} == set(builtins())


def test_without_root_nothing_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin.os, "geteuid", lambda: 1000)
    with pytest.raises(builtin.BuiltinError, match="needs root"):
        builtin.build(base.BUILTIN)
    assert builtin.main(code_interpreter.BUILTIN, ["build", "--data-dir", "/nonexistent"]) == 1

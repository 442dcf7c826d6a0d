"""Rules of the code base that no linter checks (issue 13; docs/queries.md):

* no ``TYPE_CHECKING`` imports: a module that needs another only for its types while
  that one imports it hides an import cycle the layers check cannot see (say what
  you need with a Protocol instead, as ``db/pg_upgrade.py`` does);
* no SQL in f-strings and no hand-numbered ``$n`` placeholders: statements are Core,
  compiled once (``db/statements.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import chroma_orch

SOURCE = Path(chroma_orch.__file__).parent
SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\b"
    r".*\b(FROM|INTO|SET|TABLE|DATABASE|INDEX|SCHEMA)\b"
)
PLACEHOLDER = re.compile(r"\$[0-9]+\b")


def _modules() -> list[Path]:
    """The package's own modules; its migrations are SQL by nature."""
    return [p for p in sorted(SOURCE.rglob("*.py")) if "migrations" not in p.parts]


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "TYPE_CHECKING"


def _f_string_text(node: ast.JoinedStr) -> str:
    return "".join(
        part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else "{}"
        for part in node.values
    )


def _sql_in_f_string(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) and bool(SQL.search(_f_string_text(node).upper()))


def _numbered_placeholder(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and bool(PLACEHOLDER.search(node.value))
    )


RULES = {
    "type_checking": _type_checking,
    "sql_in_f_string": _sql_in_f_string,
    "numbered_placeholder": _numbered_placeholder,
}


def test_the_rules_see_the_package() -> None:
    assert len(_modules()) > 100  # the scan reads the code, not an empty directory


@pytest.mark.parametrize("rule", RULES)
def test_no_module_breaks_the_rule(rule: str) -> None:
    broken = RULES[rule]
    found = [
        f"{path.relative_to(SOURCE)}:{getattr(node, 'lineno', '?')}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if broken(node)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("rule", "source"),
    [
        ("type_checking", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"),
        ("sql_in_f_string", 'q = f"SELECT id FROM {table}"\n'),
        ("sql_in_f_string", 'q = f"update instances set phase = {p}"\n'),
        ("sql_in_f_string", 'q = f"CREATE DATABASE {name}"\n'),
        ("numbered_placeholder", 'q = "SELECT 1 FROM pg_database WHERE datname = $1"\n'),
    ],
)
def test_each_rule_catches_what_it_forbids(rule: str, source: str) -> None:
    assert any(RULES[rule](node) for node in ast.walk(ast.parse(source)))

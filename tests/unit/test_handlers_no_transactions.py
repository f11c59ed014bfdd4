"""Issue #16: console and API handlers parse, call an operation and present; the operation's unit of
work (`subscriptions.operations.UnitOfWork`) commits, so no handler commits or rolls back itself."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "subscriptions" / "web"
HANDLERS = [
    *sorted((WEB / "admin").glob("*.py")),
    *sorted((WEB / "apiv1").glob("*.py")),
    WEB / "api.py",
]


def transaction_calls(source: str) -> list[int]:
    """Lines that call `.commit()` or `.rollback()` on anything."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("commit", "rollback")
    ]


def test_no_console_or_api_handler_commits_or_rolls_back() -> None:
    assert len(HANDLERS) > 10  # the console's and the API's modules were found
    found = {
        str(path.relative_to(WEB)): lines
        for path in HANDLERS
        if (lines := transaction_calls(path.read_text()))
    }
    assert found == {}


def test_the_check_sees_a_commit_and_a_rollback() -> None:
    source = "def route(session):\n    session.commit()\n    if x:\n        session.rollback()\n"
    assert transaction_calls(source) == [2, 4]

"""The import contract between the packages, read from the source with `ast` (no import runs).

    mail ◄── subscriptions (the store) ◄── subscriptions.web ─┐
     ▲  ◄────────────────────────────────────────────────────┘
     └──── worker ◄── entry points (subscriptions.cli, subscriptions.supervisor)

- the store (`subscriptions.*` but the web and the entry points) imports neither the web nor the worker;
- `mail` imports no store module, no web and no worker: only the pure helpers in MAIL_MAY_USE, which
  themselves import nothing else of the store and no SQLAlchemy;
- the web imports no worker module at all.

Every import counts: at the top, inside a function, or under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("mail", "subscriptions", "worker")
#: Modules of `subscriptions` that start processes or serve commands: they may import the worker.
ENTRY_POINTS = frozenset({"subscriptions.cli", "subscriptions.supervisor"})
#: The store's pure helpers (no database, no web) that `mail` may import.
MAIL_MAY_USE = frozenset(
    {
        "subscriptions.content",
        "subscriptions.errors",
        "subscriptions.i18n",
        "subscriptions.markdown",
        "subscriptions.settings",
        "subscriptions.tokens",
    }
)


def modules(root: Path) -> dict[str, Path]:
    """Every module of PACKAGES under `root`, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for each import in the file, anywhere in it; `from a import b` names a.b
    when that is a module, else a. Relative imports are resolved against `name`."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in known else base


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _web(module: str) -> bool:
    return _within(module, "subscriptions.web")


def _store(module: str) -> bool:
    return (
        _within(module, "subscriptions")
        and not _web(module)
        and module not in ENTRY_POINTS
        and module != "subscriptions"
    )


def violations(root: Path) -> list[str]:
    """Each import that breaks the contract, as `path:line: module imports target (rule)`."""
    found = modules(root)
    known = set(found)
    broken: list[str] = []
    for name, path in found.items():
        for line, target in imports(name, path, known):
            rule = _broken_rule(name, target)
            if rule:
                where = path.relative_to(root)
                broken.append(f"{where}:{line}: {name} imports {target} ({rule})")
    return broken


def _broken_rule(name: str, target: str) -> str | None:
    worker = _within(target, "worker")
    if _within(name, "mail"):
        if worker:
            return "mail imports no worker"
        if _web(target):
            return "mail imports no web"
        if _within(target, "subscriptions") and target not in MAIL_MAY_USE | {"subscriptions"}:
            return "mail imports no store module"
    if name in MAIL_MAY_USE:
        if _within(target, "sqlalchemy"):
            return "mail's helpers touch no database"
        if _within(target, "subscriptions") and target not in MAIL_MAY_USE:
            return "mail's helpers import only each other"
    if _web(name) and worker:
        return "the web imports no worker module"
    if _store(name) and (worker or _web(target)):
        return "the store imports neither the web nor the worker"
    return None

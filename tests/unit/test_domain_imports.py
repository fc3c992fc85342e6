"""The domain imports nothing but the standard library and eventsourcing.domain."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "src" / "domain"
ALLOWED = {"eventsourcing.domain", "__future__"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_domain_imports_only_the_standard_library_and_eventsourcing_domain() -> None:
    files = sorted(DOMAIN.glob("*.py"))
    assert files, "no domain modules found"
    offending = {
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if module not in ALLOWED
        and module.split(".")[0] not in sys.stdlib_module_names
        and module.split(".")[0] != "domain"
    }
    assert not offending, f"domain imports infrastructure: {sorted(offending)}"


def test_the_check_itself_catches_an_infrastructure_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import psycopg\nfrom eventsourcing.persistence import StoredEvent\n")
    assert imported_modules(bad) == {"psycopg", "eventsourcing.persistence"}

"""protocol/ stays sans-I/O, and the daemons never import the server (design §2, §8)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_MODULES = {
    "httpx",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "socket",
    "subprocess",
    "requests",
    "urllib",
    "http",
    "asyncio",
    "shutil",
    "tempfile",
    "pathlib",
    "os",
    "io",
    "sdk",
    "coordinator",
    "solver",
    "verifier",
    "cli",
}
SERVER_MODULES = {"fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "coordinator"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def calls_open(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open"
        for n in ast.walk(tree)
    )


@pytest.mark.parametrize(
    "path", sorted((ROOT / "protocol").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_protocol_imports_no_io(path):
    forbidden = imported_modules(path) & IO_MODULES
    assert not forbidden, f"{path.name} imports {forbidden}"
    assert not calls_open(path), f"{path.name} opens files"


@pytest.mark.parametrize("package", ["solver", "verifier", "sdk"])
def test_daemons_and_sdk_never_import_the_server(package):
    for path in (ROOT / package).rglob("*.py"):
        forbidden = imported_modules(path) & SERVER_MODULES
        assert not forbidden, f"{path} imports {forbidden}"
    other = {"solver": "verifier", "verifier": "solver"}.get(package)
    if other:
        for path in (ROOT / package).rglob("*.py"):
            assert other not in imported_modules(path), f"{path} imports {other}"

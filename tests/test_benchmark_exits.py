"""Every benchmark's exit status says whether it met the bar it prints: ``make bench`` stops at
the first that misses (a benchmark that only prints its verdict would let CI pass)."""

import ast
from pathlib import Path

import pytest

BENCHMARKS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
    if p.stem != "__init__"
)


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    (found,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_a_benchmark_exits_with_its_verdict(path: Path) -> None:
    tree = ast.parse(path.read_text())
    main = _function(tree, "main")
    assert isinstance(main.returns, ast.Name) and main.returns.id == "int", (
        f"{path.name}: main() must return the exit status (0 meets the bar, 1 misses it)"
    )
    returns = [n for n in ast.walk(main) if isinstance(n, ast.Return)]
    assert returns and all(r.value is not None for r in returns), f"{path.name}: a bare return"
    guard = next(
        n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
    )
    assert "sys.exit(main())" in ast.unparse(guard), f"{path.name}: main()'s status is dropped"
    source = ast.unparse(main)
    assert "MEETS" in source or "PASS" in source, f"{path.name}: the summary names no verdict"

"""The package's own shape: every function short enough to read at once."""

import ast
from pathlib import Path

import mobilenet

MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_the_limit():
    root = Path(mobilenet.__file__).parent
    long = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over the limit: " + ", ".join(long)

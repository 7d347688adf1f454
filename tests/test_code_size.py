"""The house's size limits (docs/design.md, "Size limits"): no function over 60 lines, no module under
stages/ over 500 lines (one concern whole: split by meaning, not by size), no function over 6 parameters
unless a `# params:` comment on its signature (or in the comment lines above its `def`) says why. Counted
in the formatted code (ruff format), in stages/, tools/ and bench/.

Nothing is over a limit: a change that goes over one splits the code, or says why in `# params:`."""

from __future__ import annotations

import ast

from helpers import ROOT

MAX_FUNCTION_LINES, MAX_MODULE_LINES, MAX_PARAMS = 60, 500, 6
FOLDERS = ("stages", "tools", "bench")


def _params(node: ast.FunctionDef) -> int:
    a = node.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
    return n - bool(a.args and a.args[0].arg in ("self", "cls"))


def _says_why(lines: list[str], node: ast.FunctionDef) -> bool:
    """A `# params:` comment in the comment lines right above the `def` (or its decorators) or in its signature."""
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return any("# params:" in line for line in lines[start : node.body[0].lineno - 1])


def sizes() -> dict[str, int]:
    """Every size over its limit: "path" (module lines), "path::function lines" or "path::function params"."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            lines = text.splitlines()
            if folder == "stages" and len(lines) > MAX_MODULE_LINES:
                out[name] = len(lines)
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        out[f"{name}::{node.name} lines"] = length
                    if _params(node) > MAX_PARAMS and not _says_why(lines, node):
                        out[f"{name}::{node.name} params"] = _params(node)
    return out


def test_no_function_or_module_is_over_the_size_limits():
    over = sizes()
    assert not over, f"over a limit (split it, or say why in a `# params:` comment): {over}"


def test_the_limits_see_long_functions_and_unexplained_parameters(tmp_path, monkeypatch):
    code = (
        "def f(a, b, c, d, e, f, g):\n"
        + "    x = 1\n" * 60
        + "\n\ndef g(a, b, c, d, e, f, g):  # params: why\n    pass\n"
        + "\n\n# params: why,\n# on two lines\ndef h(a, b, c, d, e, f, g):\n    pass\n"
    )
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "m.py").write_text(code)
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert sizes() == {"stages/m.py::f lines": 61, "stages/m.py::f params": 7}

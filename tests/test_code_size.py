"""The house's size limits (docs/design.md, "Size limits"): no function over 60 lines, no module under
stages/ over 300 lines, no function over 6 parameters unless a `# params:` comment on its signature (or
in the comment lines above its `def`) says why. Counted in the formatted code (ruff format), in stages/, tools/ and bench/.

The code that was over a limit when the limits came is listed in OVER with its size then: each may
shrink (then lower or drop its entry), none may grow, and anything else over a limit fails."""

from __future__ import annotations

import ast

from helpers import ROOT

MAX_FUNCTION_LINES, MAX_MODULE_LINES, MAX_PARAMS = 60, 300, 6
FOLDERS = ("stages", "tools", "bench")
# "path" (module lines), "path::function lines" or "path::function params": the size when the limits came.
OVER = {
    "stages/lib/report/cards.py": 420,
    "stages/lib/report/cards.py::card_markdown lines": 106,
    "stages/lib/report/posthoc_summary.py::external_markdown lines": 64,
    "stages/lib/report/posthoc_summary.py::posthoc_markdown lines": 65,
    "stages/report.py": 365,
    "stages/report.py::report lines": 105,
    "stages/report.py::report params": 11,
}


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
    """Every size over its limit, keyed as OVER is."""
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


def test_no_function_or_module_grows_past_the_size_limits():
    found = sizes()
    new = {k: v for k, v in found.items() if k not in OVER}
    grown = {k: (OVER[k], v) for k, v in found.items() if k in OVER and v > OVER[k]}
    assert not new, f"over a limit (split it, or say why in a `# params:` comment): {new}"
    assert not grown, f"grown past its size when the limits came (was, now): {grown}"


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

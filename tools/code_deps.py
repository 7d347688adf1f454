"""Each DVC stage's code deps, read from the imports:  python -m tools.code_deps [--write]  (make deps)

A stage's result depends on every project module its command imports, directly or not, and on the
package __init__ files that importing them runs (stages/__init__.py pins the CPU kernels). So its code
deps in dvc.yaml are exactly those .py files: one missing and an edit to it leaves stale results while
`dvc status` says all is up to date; one extra (or a folder, whose __pycache__ Python rewrites on
import) and DVC reruns the stage for code it never runs. This finds them with `ast` (imports inside
functions count: they run too). Without flags it prints each stage's missing and extra code deps in
dvc.yaml and demo/dvc.yaml (exit 1 on any; tests/test_repository.py runs it); `--write` rewrites the
code deps of dvc.yaml in place, comments and all (`make deps` then regenerates demo/dvc.yaml). Standard-library
modulefinder would also walk torch and every other installed package; only stages/ and tools/ matter.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from stages.lib.core.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "tools")  # the project's code; everything else is a locked dependency


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """stages.lib.core.files -> stages/lib/core/files.py (or a package's __init__.py); None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Absolute names of what `path` (module `module`) imports; `from a import b` may name a module a.b."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path, root: Path = ROOT) -> str:
    """stages/lib/core/files.py -> stages.lib.core.files; stages/lib/__init__.py -> stages.lib."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every absolute name the file imports, inside functions too (what it runs, project or not)."""
    return _imported_names(path, module_name(path, root))


def code_files(module: str, root: Path = ROOT) -> set[str]:
    """Every project file that `python -m <module>` runs: the module, what it imports, transitively,
    and the __init__.py of each package on the way; paths relative to `root`, with / separators."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            prefix = ".".join(parts[:i])
            path = module_file(prefix, root)
            if path is not None and prefix not in seen:
                seen[prefix] = path
                todo.extend(_imported_names(path, prefix))
    return {p.relative_to(root).as_posix() for p in seen.values()}


def dep_list(module: str, root: Path = ROOT) -> list[str]:
    """The code deps of `python -m <module>`: its own file first, then every other file it runs, sorted."""
    own = root.joinpath(*module.split(".")).with_suffix(".py").relative_to(root).as_posix()
    return [own] + sorted(code_files(module, root) - {own})


def stage_modules(pipeline: dict) -> dict[str, str]:
    """{stage name: the module its cmd runs with `python -m`}."""
    out = {}
    for name, stage in pipeline["stages"].items():
        body = stage.get("do", stage)
        if m := re.search(
            r"python -m ([\w.]+)", " ".join(body["cmd"]) if isinstance(body["cmd"], list) else body["cmd"]
        ):
            out[name] = m.group(1)
    return out


def is_code(dep) -> bool:
    """A dep under stages/ or tools/, as dvc.yaml names it (`stages/x.py`) or demo/dvc.yaml (`../stages/x.py`)."""
    parts = Path(str(dep)).parts
    while parts[:1] == ("..",):
        parts = parts[1:]
    return bool(parts) and parts[0] in PACKAGES


def wrong_deps(dvc_yaml: Path, root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": files it runs but does not list, "extra": code deps it lists but does not run}}
    for each stage whose code deps are not exactly its import closure; named as dvc.yaml would name them
    (relative to its folder: demo/dvc.yaml says ../stages/...). A folder of code is always extra."""
    pipeline = yaml.safe_load(dvc_yaml.read_text())
    here = dvc_yaml.parent.resolve()
    out = {}
    for name, module in stage_modules(pipeline).items():
        stage = pipeline["stages"][name]
        listed = {os.path.normpath(d) for d in map(str, stage.get("do", stage).get("deps", [])) if is_code(d)}
        wanted = {os.path.relpath(root / f, here) for f in code_files(module, root)}
        if listed != wanted:
            out[name] = {"missing": sorted(wanted - listed), "extra": sorted(listed - wanted)}
    return out


def _yaml() -> YAML:
    """ruamel's round trip, laid out as dvc.yaml is, so a rewrite changes only the deps it replaces."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def write_code_deps(dvc_yaml: Path, root: Path = ROOT) -> None:
    """Replace each stage's code deps in dvc.yaml by its import closure, where the first of them stood
    (after the data deps when it lists none), keeping every comment and every other line."""
    rt = _yaml()
    pipeline = rt.load(dvc_yaml.read_text())
    for name, module in stage_modules(pipeline).items():
        stage = pipeline["stages"][name]
        deps = stage.get("do", stage)["deps"]
        code = [i for i, d in enumerate(deps) if is_code(d)]
        start, stop = (code[0], code[-1] + 1) if code else (len(deps), len(deps))
        trailing = deps.ca.items.pop(stop - 1, None) if code else None  # the comment after the last one
        del deps[start:stop]
        files = dep_list(module, root)
        for i, dep in enumerate(files):
            deps.insert(start + i, dep)
        if trailing is not None:
            deps.ca.items[start + len(files) - 1] = trailing
    with atomic_path(dvc_yaml) as tmp, open(tmp, "w") as f:
        rt.dump(pipeline, f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps, then demo/dvc.yaml")
    args = parser.parse_args()
    if args.write:
        write_code_deps(ROOT / "dvc.yaml")  # `make deps` then writes demo/dvc.yaml from it (tools.demo_pipeline)
        print("wrote the code deps of dvc.yaml from the imports")
        return 0
    wrong = False
    for path in (ROOT / "dvc.yaml", ROOT / "demo" / "dvc.yaml"):
        for stage, files in wrong_deps(path).items():
            wrong = True
            for kind, names in files.items():
                if names:
                    print(f"{path.relative_to(ROOT)}: stage {stage}, {kind} code deps: {', '.join(names)}")
    if wrong:
        print("run `make deps` to write them from the imports", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

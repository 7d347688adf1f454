"""The project code each DVC stage runs, read from the imports:  python -m tools.code_deps [dvc.yaml]

A stage's result depends on every project module its command imports, directly or not, and on the
package __init__ files that importing them runs (stages/__init__.py pins the CPU kernels). dvc.yaml
must list each as a dep, or an edit to one leaves stale results while `dvc status` says all is up to
date. This finds them with `ast` (imports inside functions count: they run too) and prints, per
stage, the .py deps dvc.yaml lacks; tests/test_repository.py fails on any. Standard-library
modulefinder would also walk torch and every other installed package; only stages/ and tools/ matter.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import yaml

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
    """dvc.yaml's code deps for `python -m <module>`: its own file first, the package __init__ files, then
    each room of stages/lib it imports as one folder (stages/lib/<room>), as dvc.yaml lists them."""
    files = sorted(code_files(module, root))
    own = root.joinpath(*module.split(".")).with_suffix(".py").relative_to(root).as_posix()
    rooms = sorted({"/".join(f.split("/")[:3]) for f in files if f.startswith("stages/lib/") and f.count("/") == 3})
    return [own] + [f for f in files if f != own and not any(f.startswith(r + "/") for r in rooms)] + rooms


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


def _covered(path: Path, deps: set[Path]) -> bool:
    """A file is a dep when dvc.yaml lists it or a folder holding it (DVC hashes a folder dep whole)."""
    return path in deps or any(parent in deps for parent in path.parents)


def missing_deps(dvc_yaml: Path, root: Path = ROOT) -> dict[str, list[str]]:
    """{stage: the project files its module imports that its deps lack}, for stages lacking any, named
    as dvc.yaml would name them (relative to its folder: demo/dvc.yaml says ../stages/...)."""
    pipeline = yaml.safe_load(dvc_yaml.read_text())
    here = dvc_yaml.parent.resolve()
    out = {}
    for name, module in stage_modules(pipeline).items():
        stage = pipeline["stages"][name]
        deps = {(here / d).resolve() for d in stage.get("do", stage).get("deps", [])}
        lacking = sorted(f for f in code_files(module, root) if not _covered((root / f).resolve(), deps))
        if lacking:
            out[name] = [os.path.relpath(root / f, here) for f in lacking]
    return out


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:]] or [ROOT / "dvc.yaml", ROOT / "demo" / "dvc.yaml"]
    lacking = False
    for path in paths:
        for stage, files in missing_deps(path).items():
            lacking = True
            print(f"{path}: stage {stage} imports, but does not depend on: {', '.join(files)}")
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())

"""The rooms import one way (stages/lib/__init__.py declares their order, lowest first): a module imports
its own room or one below it, never one above; no two files import each other, directly or round a loop;
the stage modules stand above every room and import no other stage module; nothing under stages/ imports
bench/ or tools/ (they may use any room). Imports inside functions count: they run too."""

from __future__ import annotations

import graphlib
from pathlib import Path

from helpers import ROOT
from stages.lib import ROOMS
from tools.code_deps import imported_names, module_file, module_name

STAGES = "stages"  # the stage modules' floor, above every room


def room(name: str) -> str | None:
    """stages/lib/<room>/x.py -> <room>; stages/<stage>.py -> "stages"; the package faces -> None."""
    parts = Path(name).parts
    if parts[-1] == "__init__.py" and len(parts) <= 3:
        return None  # stages/__init__.py, stages/lib/__init__.py: run by every import, holding no room's code
    return parts[2] if parts[:2] == ("stages", "lib") else STAGES


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{file: the project files under stages/ it imports}, paths relative to the project."""
    graph = {}
    for path in sorted((root / "stages").rglob("*.py")):
        targets = {module_file(n, root) for n in imported_names(path, root)} - {None, path}
        graph[path.relative_to(root).as_posix()] = {t.relative_to(root).as_posix() for t in targets}
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    floor = {name: i for i, name in enumerate([*ROOMS, STAGES])}
    out = []
    for src, targets in graph.items():
        for dst in sorted(targets):
            a, b = room(src), room(dst)
            if a is not None and b is not None and (floor[b] > floor[a] or (a == b == STAGES)):
                out.append(f"{src} -> {dst}")
    return out


def loops(graph: dict[str, set[str]]) -> list[str]:
    """Files that import each other, directly or round a loop (one loop named at a time, removed, and again)."""
    graph = {k: set(v) for k, v in graph.items()}
    found = []
    while True:
        try:
            graphlib.TopologicalSorter(graph).prepare()
            return found
        except graphlib.CycleError as err:
            cycle = err.args[1]
            found.append(" -> ".join(cycle))
            graph[cycle[-2]].discard(cycle[-1])  # break it to find the next


def test_every_room_is_declared_and_every_folder_of_stages_lib_is_a_room():
    folders = {p.parent.name for p in (ROOT / "stages" / "lib").glob("*/__init__.py")}
    assert folders == set(ROOMS) and len(ROOMS) == len(set(ROOMS))


def test_no_import_runs_up_the_rooms_and_no_stage_module_imports_another():
    assert not (up := upward(import_graph())), "imports that run up (stages/lib/__init__.py: ROOMS):\n" + "\n".join(up)


def test_no_two_files_import_each_other():
    assert not (found := loops(import_graph())), "files importing each other:\n" + "\n".join(found)


def test_nothing_under_stages_imports_bench_or_tools():
    used = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "stages").rglob("*.py")
        for name in imported_names(path)
        if name.split(".")[0] in ("bench", "tools")
    }
    assert not used, sorted(used)


def test_the_checks_see_an_upward_import_a_loop_and_a_stage_importing_a_stage(tmp_path):
    files = {
        "stages/__init__.py": "",
        "stages/lib/__init__.py": "",
        "stages/lib/core/__init__.py": "",
        "stages/lib/core/a.py": "def f():\n    from stages.lib.data import b\n",  # up, inside a function
        "stages/lib/data/__init__.py": "",
        "stages/lib/data/b.py": "from stages.lib.data.c import X\n",
        "stages/lib/data/c.py": "from stages.lib.data import b\nX = 1\n",  # b <-> c
        "stages/one.py": "from stages import two\n",
        "stages/two.py": "from stages.lib.core import a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert upward(graph) == [
        "stages/lib/core/a.py -> stages/lib/data/__init__.py",  # the room's package is the room too
        "stages/lib/core/a.py -> stages/lib/data/b.py",
        "stages/one.py -> stages/two.py",
    ]
    assert len(loops(graph)) == 1 and set(loops(graph)[0].split(" -> ")) == {
        "stages/lib/data/b.py",
        "stages/lib/data/c.py",
    }
    assert module_name(tmp_path / "stages/lib/data/b.py", tmp_path) == "stages.lib.data.b"

"""The repository as a user gets it: the package metadata and its lock, licence and citation,
`make clean-demo`, and sharing data and models through a DVC remote (docs/remote.md)."""

from __future__ import annotations

import filecmp
import functools
import importlib
import itertools
import re
import shutil
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import ROOT, make_project, run

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.txt as {canonical name: (version, hashes)}."""
    text = (ROOT / "requirements.txt").read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            spec, *options = line.split()
            name, version = spec.split("==")  # every line an exact pin
            pins[canonicalize_name(name)] = (version, [o for o in options if o.startswith("--hash=sha256:")])
    return pins


def test_the_lock_pins_every_package_with_hashes_and_matches_pyproject():
    pins = lock()
    assert all(hashes for _, hashes in pins.values()), "pip --require-hashes needs a hash on every line"
    extras = PYPROJECT["optional-dependencies"]
    direct = [Requirement(r) for r in PYPROJECT["dependencies"] + extras["test"] + extras["export"]]
    for req in direct:  # a dependency added to pyproject.toml without refreshing the lock fails here
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name][0]), f"{req}, locked {pins.get(name, [None])[0]}"
    assert {n: pins[n][0] for n in ("torch", "torchvision", "albumentations")} == {
        "torch": "2.14.1",
        "torchvision": "0.29.1",
        "albumentations": "2.0.8",
    }
    # pytest is for `make test` only: in the lock through the test extra, never a runtime requirement.
    assert "pytest" in pins and not any(Requirement(r).name == "pytest" for r in PYPROJECT["dependencies"])
    # Every indirect package too: this environment (what `make` installed) is exactly the lock.
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert {n: installed.get(n) for n in pins} == {n: v for n, (v, _) in pins.items()}


def test_console_commands_name_existing_entry_points():
    scripts = PYPROJECT["scripts"]
    assert {"cxr4-predict", "cxr4-export", "cxr4-demo-data"} <= set(scripts)
    for target in scripts.values():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), target


def test_licence_and_citation_agree_and_cite_the_study_datasets():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"cff-version", "message", "title", "authors"} <= set(cff)  # required by CFF 1.2.0
    assert cff["authors"] == [{"name": "CXR-4 contributors"}]
    assert cff["license"] == PYPROJECT["license"] == "MIT"
    assert str(cff["version"]) == PYPROJECT["version"]
    dois = {ref["doi"] for ref in cff["references"] if ref["type"] == "data"}
    assert dois == {"10.17632/rscbjbr9sj.2", "10.6084/m9.figshare.12275009"}


def demo_outputs() -> list[str]:
    """Every output demo/dvc.yaml declares, foreach and matrix stages expanded with demo/params.yaml."""
    pipeline = yaml.safe_load((ROOT / "demo" / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "demo" / "params.yaml").read_text())
    lookup = lambda expr: functools.reduce(lambda d, k: d[k], re.fullmatch(r"\$\{(.+)\}", expr)[1].split("."), params)  # noqa: E731
    paths = []
    for stage in pipeline["stages"].values():
        if "foreach" in stage:
            over = lookup(stage["foreach"])  # a list (${item}), or a mapping (${key}: ${item})
            body, items = (
                stage["do"],
                (
                    [{"${key}": str(k), "${item}": str(v)} for k, v in over.items()]
                    if isinstance(over, dict)
                    else [{"${item}": str(i)} for i in over]
                ),
            )
        elif "matrix" in stage:
            axes = {k: lookup(v) if isinstance(v, str) else v for k, v in stage["matrix"].items()}
            body, items = (
                stage,
                [
                    {f"${{item.{k}}}": str(v) for k, v in zip(axes, combo)}
                    for combo in itertools.product(*axes.values())
                ],
            )
        else:
            body, items = stage, [{}]
        for item in items:
            for out in body.get("outs", []) + body.get("metrics", []) + body.get("plots", []):
                path = out if isinstance(out, str) else next(iter(out))
                for key, value in item.items():
                    path = path.replace(key, value)
                paths.append(path)
    return paths


def test_clean_demo_returns_the_tree_to_the_clone(tmp_path):
    proj = make_project(tmp_path / "proj", None, {})
    demo = proj / "demo"
    outputs = demo_outputs()
    assert {
        "data",
        "cache",
        "models/resnet18/seed42.pt",
        "checkpoints/resnet18/seed42.pt",
        "metrics/summary.md",
    } <= set(outputs)
    # What a demo run leaves: every declared output (a file, or a folder with a file), DVC's lock, cache,
    # tmp and .gitignore entries, a `dvc exp run` param; a deleted tracked file for good measure.
    for out in outputs:
        path = demo / out if Path(out).suffix else demo / out / "x.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("demo output")
    for planted in ("dvc.lock", ".dvc/cache/files/md5/ab/cdef", ".dvc/tmp/rwlock", "models/.gitignore"):
        (demo / planted).parent.mkdir(parents=True, exist_ok=True)
        (demo / planted).write_text("demo output")
    tracked = {name: (demo / name).read_bytes() for name in (".gitignore", "params.yaml", "dvc.yaml")}
    (demo / ".gitignore").write_text((demo / ".gitignore").read_text() + "/data\n")
    (demo / "params.yaml").write_text((demo / "params.yaml").read_text().replace("seed: 0", "seed: 1"))
    (demo / "dvc.yaml").unlink()
    run(["git", "add", "demo/params.yaml"], proj)  # staged, as `dvc exp apply` + `git add` would leave it
    # The user's own work at the top level is not the demo's and stays.
    for mine in ("data/train/a.png", "models/resnet18.pt", "notes.txt"):
        (proj / mine).parent.mkdir(parents=True, exist_ok=True)
        (proj / mine).write_text("mine")

    run(["make", "clean-demo"], proj)

    status = run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], proj).stdout.splitlines()
    assert [line for line in status if line[3:].startswith("demo/")] == []
    assert {"?? data/train/a.png", "?? models/resnet18.pt", "?? notes.txt"} <= set(status)
    assert {name: (demo / name).read_bytes() for name in tracked} == tracked
    assert (proj / "models" / "resnet18.pt").read_text() == "mine"


def same_tree(a: Path, b: Path) -> bool:
    """Same relative file names and bytes under a and b."""
    files = lambda root: sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())  # noqa: E731
    return files(a) == files(b) and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files(a))


@pytest.mark.slow
def test_a_local_folder_remote_gives_a_colleague_the_data(tmp_path, tiny_data):
    """docs/remote.md at the top level: remote add, push; a colleague clones and pulls the data."""
    proj = make_project(tmp_path / "proj", tiny_data, {})  # `dvc add data` done and committed
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], proj)
    run(["git", "commit", "-qam", "DVC remote: shared folder"], proj)
    run(["dvc", "push"], proj)

    colleague = tmp_path / "colleague"
    run(["git", "clone", "-q", str(proj), str(colleague)], tmp_path)
    assert not (colleague / "data").exists()
    run(["dvc", "pull", "data.dvc"], colleague)  # the data alone: no dvc.lock yet, nothing else to pull
    assert same_tree(tiny_data, colleague / "data")


def test_the_demo_remote_gives_a_colleague_its_data_and_trained_models(demo_project, tmp_path):
    """docs/remote.md in demo/ (its own DVC project, its own .dvc/config): push, clone, pull."""
    proj = tmp_path / "proj"
    shutil.copytree(demo_project, proj, symlinks=True)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "demo results"], proj)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], proj / "demo")
    run(["git", "commit", "-qam", "demo: DVC remote"], proj)
    assert "shared" in (proj / "demo" / ".dvc" / "config").read_text()
    run(["dvc", "push"], proj / "demo")

    colleague = tmp_path / "colleague"
    run(["git", "clone", "-q", str(proj), str(colleague)], tmp_path)
    run(["dvc", "pull"], colleague / "demo")
    assert len(list((colleague / "demo" / "models").rglob("*.pt"))) >= 2  # models/<backbone>/seed<seed>.pt
    for out in ("data", "cache", "models", "checkpoints"):
        assert same_tree(proj / "demo" / out, colleague / "demo" / out), out
    # the resume checkpoints come along, so nothing is retrained
    assert "Data and pipelines are up to date" in run(["dvc", "status"], colleague / "demo").stdout


def test_every_stage_depends_on_exactly_the_project_files_it_imports():
    """dvc.yaml and demo/dvc.yaml list, for each stage, every file under stages/ and tools/ its command
    imports, directly or not, and nothing else of the code (no folder, no module it does not run): an
    edit to one must make `dvc status` show the stage, an edit elsewhere must not."""
    from tools.code_deps import wrong_deps

    wrong = {
        f"{path.relative_to(ROOT)}, stage {stage}": files
        for path in (ROOT / "dvc.yaml", ROOT / "demo" / "dvc.yaml")
        for stage, files in wrong_deps(path).items()
    }
    assert not wrong, "code deps differ from the imports; run `make deps`:\n" + "\n".join(
        f"  {k}: missing {v['missing']}, extra {v['extra']}" for k, v in wrong.items()
    )


CODE = {
    "stages/__init__.py": "",
    "stages/lib/__init__.py": "",
    "stages/run.py": "def main():\n    from stages.lib import a\n",
    "stages/lib/a.py": "from . import b\nimport numpy\n",
    "stages/lib/b.py": "from .c import X\n",
    "stages/lib/c.py": "X = 1\n",
    "stages/lib/unused.py": "",
}


def code_tree(root: Path, deps: list[str]) -> Path:
    for name, text in CODE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: python -m stages.run --x y\n    # data, then code\n    deps:\n"
        + "".join(f"      - {d}\n" for d in deps)
        + "    # the outputs\n    outs:\n      - out\n"
    )
    return root / "dvc.yaml"


def test_code_deps_follow_imports_in_functions_relative_ones_and_package_inits(tmp_path):
    from tools.code_deps import code_files, wrong_deps

    used = set(CODE) - {"stages/lib/unused.py"}
    assert code_files("stages.run", tmp_path) == set()  # nothing there yet
    dvc_yaml = code_tree(tmp_path, ["data", *sorted(used - {"stages/lib/c.py"}), "stages/lib/unused.py"])
    assert code_files("stages.run", tmp_path) == used
    assert wrong_deps(dvc_yaml, tmp_path) == {"s": {"missing": ["stages/lib/c.py"], "extra": ["stages/lib/unused.py"]}}
    code_tree(tmp_path, ["data", "stages/run.py", "stages/lib"])  # a folder is never exact
    assert wrong_deps(dvc_yaml, tmp_path)["s"]["extra"] == ["stages/lib"]


def test_make_deps_writes_exactly_the_imports_and_keeps_every_other_line(tmp_path):
    from tools.code_deps import write_code_deps, wrong_deps

    dvc_yaml = code_tree(tmp_path, ["data", "stages/run.py", "stages/lib", "stages/lib/unused.py"])
    before = dvc_yaml.read_text()
    write_code_deps(dvc_yaml, tmp_path)
    assert wrong_deps(dvc_yaml, tmp_path) == {}
    after = dvc_yaml.read_text()
    code = [line.strip()[2:] for line in after.splitlines() if line.strip().startswith("- stages/")]
    assert code == [
        "stages/run.py",
        "stages/__init__.py",
        "stages/lib/__init__.py",
        "stages/lib/a.py",
        "stages/lib/b.py",
        "stages/lib/c.py",
    ]  # its own module first
    kept = [line for line in before.splitlines() if "stages/" not in line]
    assert [line for line in after.splitlines() if "stages/" not in line] == kept  # comments and order
    write_code_deps(dvc_yaml, tmp_path)
    assert dvc_yaml.read_text() == after  # a second run changes nothing


def test_a_missing_requirement_skips_locally_and_fails_in_ci(monkeypatch):
    """Real films and Chromium: a skip with its reason on a developer's machine, a failure in CI."""
    import pytest

    from helpers import skip_unless_ci

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no films here"):
        skip_unless_ci("no films here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI: no films here"):
        skip_unless_ci("no films here")
    assert "exit 1" in (ROOT / ".ci" / "run").read_text().split("could not install chromium, which CI requires")[1]

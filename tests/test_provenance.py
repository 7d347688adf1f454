"""Every number attributable: the demo is its own pipeline, locks match params, results carry a stamp."""

import csv
import json
import os
import subprocess

import pytest
import torch
import yaml
from sklearn.metrics import accuracy_score, f1_score

from helpers import ROOT, TINY_DEMO, run, run_paths
from stages.lib.params.loader import ParamsLoader
from tools.demo_pipeline import demo_pipeline

DEMO_ONLY = {
    "preprocess.img_size",
    "train.pretrained",
    "train.lr",
    "train.epochs",  # demo/params.yaml's header
    "train.threads",
    "evaluate.target_sensitivity",
    "external",
}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        nested = isinstance(value, dict) and key not in ("target_sensitivity", "external")  # params that are mappings
        out.update(flat(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}": value})
    return out


def test_the_demo_pipeline_is_the_top_level_one_after_a_synthesize_stage():
    top = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    demo = yaml.safe_load((ROOT / "demo" / "dvc.yaml").read_text())
    assert demo == demo_pipeline(top), "demo/dvc.yaml is stale: run python -m tools.demo_pipeline"
    assert list(demo["stages"]) == ["synthesize", *top["stages"]]
    for name, stage in top["stages"].items():  # the same stages but for where the code is
        assert json.loads(json.dumps(demo["stages"][name]).replace('"../', '"')) == stage
    assert [p if isinstance(p, str) else next(iter(p)) for p in demo["plots"]] == [
        p if isinstance(p, str) else next(iter(p)) for p in top["plots"]
    ]


def test_demo_params_are_the_study_params_at_cpu_size():
    top = flat(yaml.safe_load((ROOT / "params.yaml").read_text()))
    demo = flat(yaml.safe_load((ROOT / "demo" / "params.yaml").read_text()))
    assert {k for k in top if demo.get(k) != top[k] and not k.startswith("assemble.")} == DEMO_ONLY
    assert {k.split(".")[0] for k in set(top) - set(demo)} == {"assemble"}  # make study-data's: the demo synthesizes
    assert {k.split(".")[0] for k in set(demo) - set(top)} == {"synthetic"}


def modified_params(status: dict) -> dict:
    """{stage: {param: change}} from `dvc status --json`: every param whose value differs from the lock.
    (A stage that never ran lists its params file as "new", not as modified params.)"""
    out = {}
    for stage, changes in status.items():
        for change in changes:
            for path, what in (change.get("changed deps", {}) if isinstance(change, dict) else {}).items():
                if path.endswith("params.yaml") and isinstance(what, dict):
                    out.setdefault(stage, {}).update(what)
    return out


@pytest.mark.slow
def test_a_fresh_clone_attributes_its_results_to_the_params_that_made_them(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    assert not (clone / "dvc.lock").exists(), "the study's pipeline has no results in git (no real data)"
    top = json.loads(run(["dvc", "status", "--json"], clone).stdout)
    assert modified_params(top) == {}, top
    assert any("deleted" in str(c) and "data" in str(c) for c in top["preprocess"])  # what is truly missing

    demo = json.loads(run(["dvc", "status", "--json"], clone / "demo").stdout)
    assert modified_params(demo) == {}, demo
    # read both as DVC does (YAML 1.2): DVC writes 1e-06, which PyYAML's 1.1 rules take for a string
    lock = yaml.load((clone / "demo" / "dvc.lock").read_text(), Loader=ParamsLoader)
    params = flat(yaml.load((clone / "demo" / "params.yaml").read_text(), Loader=ParamsLoader))
    for name, stage in lock["stages"].items():
        for key, value in flat(stage["params"]["params.yaml"]).items():
            assert params[key] == value, f"demo/dvc.lock stage {name}: {key} {value!r} != params {params[key]!r}"
    # the committed headline is the committed predictions' score, recomputed here (scikit-learn)
    headline = json.loads((clone / "demo" / "metrics" / "headline" / "resnet18.json").read_text())
    rows = list(csv.DictReader((clone / "demo" / "predictions" / "resnet18" / "test.csv").open()))
    y, pred = [r["true_label"] for r in rows], [r["predicted_label"] for r in rows]
    assert headline["test"]["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-9)
    assert headline["test"]["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)


def test_make_demo_changes_no_params_file_and_stamps_every_result(demo_project):
    changed = run(["git", "status", "--porcelain"], demo_project).stdout.splitlines()
    assert not [line for line in changed if line.endswith("params.yaml")], changed
    head = run(["git", "rev-parse", "HEAD"], demo_project).stdout.strip()
    demo = demo_project / "demo"
    lock = yaml.safe_load((demo / "dvc.lock").read_text())
    data = {
        "path": "data",
        "md5": lock["stages"]["synthesize"]["outs"][0]["md5"],
        "from": "dvc.lock (stage synthesize)",
    }
    params = yaml.safe_load((demo / "params.yaml").read_text())

    report = json.loads((demo / "metrics" / "data_report.json").read_text())["provenance"]
    assert report == {
        "git": {"commit": head, "dirty": False, "modified": []},
        "data": data,
        "params": {"preprocess": params["preprocess"], "data": params["data"]},
    }
    ckpt = torch.load(demo / run_paths("resnet18")["model"], weights_only=True)["meta"]["provenance"]
    assert ckpt["git"]["commit"] == head and ckpt["data"] == data
    assert ckpt["params"]["train"]["lr"] == params["train"]["lr"]
    assert (ckpt["params"]["backbone"], ckpt["params"]["seed"]) == ("resnet18", 42)
    one_run = json.loads((demo / run_paths("resnet18")["metrics"]).read_text())["provenance"]
    assert one_run["trained_at"] == ckpt["git"] and one_run["data"] == data
    assert one_run["params"] == {**ckpt["params"], "evaluate": params["evaluate"]}
    backbone = json.loads((demo / "metrics" / "resnet18.json").read_text())["provenance"]
    assert backbone["params"] == {"backbone": "resnet18", "seeds": [42], "evaluate": params["evaluate"]}
    assert backbone["runs"] == {"42": one_run} and backbone["git"]["commit"] == head
    ensemble = json.loads((demo / "metrics" / "ensemble.json").read_text())["provenance"]
    assert ensemble["params"]["backbones"] == TINY_DEMO["backbones"] and ensemble["params"]["seeds"] == [42]
    summary = (demo / "metrics" / "summary.md").read_text()
    assert f"- Code: commit `{head}` (clean)" in summary and f"md5 `{data['md5']}`" in summary
    assert yaml.safe_load(summary.split("```yaml\n")[1].split("```")[0]) == params


def test_the_stamp_names_each_changed_source_file_whole(tmp_path, monkeypatch):
    """git's porcelain lines start with a space for an unstaged change: the path keeps its first letter."""
    from stages.lib.core.provenance import git_state

    for name in ("stages/a.py", "old.py", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "one"], tmp_path)
    (tmp_path / "stages" / "a.py").write_text("x = 2\n")  # unstaged: " M stages/a.py"
    run(["git", "mv", "old.py", "zz.py"], tmp_path)  # staged rename: "R  zz.py\0old.py"
    (tmp_path / "notes.txt").write_text("not source\n")
    monkeypatch.chdir(tmp_path / "stages")  # a stage runs in a subfolder (demo/)
    state = git_state()
    assert (state["dirty"], state["modified"]) == (True, ["stages/a.py", "zz.py"])


def test_a_git_that_names_the_commit_but_fails_status_stamps_dirty_unknown(tmp_path, monkeypatch):
    """Empty output from a failed `git status` is no evidence of a clean tree: "unknown", and the summary says so."""
    from stages.lib.core.provenance import git_state, markdown

    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = rev-parse ]; then echo 0123abcd; exit 0; fi\n'
        'echo "fatal: index file corrupt" >&2; exit 128\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    state = git_state()
    assert state["commit"] == "0123abcd" and state["dirty"] == "unknown" and state["modified"] == []
    code = markdown({"git": state, "data": None, "params": {}})[2]
    assert code.startswith("- Code: commit `0123abcd` (uncommitted changes unknown") and "clean" not in code
    # a model card words the same stamp the same way (it once said "with uncommitted changes")
    from stages.lib.report.cards import card_markdown

    metrics = ROOT / "demo" / "metrics"
    m = json.loads((metrics / "resnet18" / "seed42.json").read_text())
    m["provenance"]["git"] = state
    card = card_markdown("resnet18, seed 42", m, json.loads((metrics / "data_report.json").read_text()), "", "m.json")
    assert code in card.splitlines() and "with uncommitted changes" not in card

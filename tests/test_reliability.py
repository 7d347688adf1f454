"""Resume after SIGKILL, bit-for-bit reproducibility, refusals, atomic outputs, safe loading."""

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY, make_project, merge, run, run_paths, stage_cmd
from stages.lib.core.backbones import BACKBONES, REGISTRY
from stages.lib.core.errors import UserError
from stages.lib.core.files import write_json

ONE = merge(TINY, {"preprocess": {"img_size": 64}, "backbones": ["resnet18"], "train": {"epochs": 3}})


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def live_metrics(proj: Path) -> dict:
    """DVCLive's summary without the throughput and the wait for the first batch, the figures that vary
    run to run."""
    summary = json.loads((proj / run_paths("resnet18")["live"] / "metrics.json").read_text())
    assert summary["train"].pop("images_per_s") > 0 and summary["train"].pop("first_batch_s") >= 0
    return summary


@pytest.mark.slow
def test_killed_training_resumes_at_next_epoch_and_ends_as_uninterrupted_run(tmp_path, tiny_data):
    whole = make_project(tmp_path / "whole", tiny_data, ONE)
    run(["dvc", "repro", "train@resnet18-42"], whole)

    killed = make_project(tmp_path / "killed", tiny_data, ONE)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(
        ["dvc", "repro", "train@resnet18-42"],
        cwd=killed,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / run_paths("resnet18")["resume"]
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists(), "training ended before its first checkpoint appeared"
    done = torch.load(last, weights_only=True)["progress"]["epoch"]
    assert done < 3, "the kill came too late to test anything"

    rerun = run(["dvc", "repro", "train@resnet18-42"], killed).stdout
    assert f"resuming from {run_paths('resnet18')['resume']}: epoch {done} done" in rerun
    epochs = re.findall(r"resnet18 seed 42 epoch (\d)/3:", rerun)
    assert epochs[0] == str(done + 1) and epochs[-1] == "3"

    tsv = (killed / run_paths("resnet18")["live"] / "plots/metrics/val/macro_f1.tsv").read_text()
    assert tsv == (whole / run_paths("resnet18")["live"] / "plots/metrics/val/macro_f1.tsv").read_text()
    assert [line.split("\t")[0] for line in tsv.splitlines()] == ["step", "1", "2", "3"]
    assert live_metrics(killed) == live_metrics(whole)
    assert_same_weights(killed / run_paths("resnet18")["model"], whole / run_paths("resnet18")["model"])


@pytest.mark.slow
def test_changed_params_refuse_to_resume(tmp_path, tiny_data):
    proj = make_project(tmp_path / "p", tiny_data, merge(ONE, {"train": {"epochs": 1}}), git=False)
    args = stage_cmd("train", "resnet18")
    run(stage_cmd("preprocess"), proj)
    run(args, proj)
    state = torch.load(proj / run_paths("resnet18")["resume"], weights_only=True)
    state["progress"]["finished"] = False  # pretend the run was cut short
    torch.save(state, proj / run_paths("resnet18")["resume"])
    (proj / "params.yaml").write_text((proj / "params.yaml").read_text().replace("  dropout: 0.1", "  dropout: 0.2"))
    assert "was written with other params, data or code; training from epoch 1" in run(args, proj).stdout


def test_an_interrupted_run_without_its_best_model_starts_over(tmp_path):
    from stages.lib.model.resume import load_resume_state, save_resume_state

    resume, model = tmp_path / "resume.pt", tmp_path / "model.pt"
    save_resume_state(resume, {"progress": {"epoch": 2, "finished": False}}, "fp")
    assert load_resume_state(resume, "fp", model) == (
        None,
        f"{model} is missing, so the interrupted run cannot be resumed; training from epoch 1",
    )
    model.write_bytes(b"")
    state, note = load_resume_state(resume, "fp", model)
    assert state["progress"]["epoch"] == 2 and note == f"resuming from {resume}: epoch 2 done, continuing"


@pytest.mark.slow
def test_two_runs_give_identical_metrics_and_weights(tmp_path, tiny_data):
    params = merge(TINY, {"train": {"epochs": 2}})
    a, b = (make_project(tmp_path / n, tiny_data, params) for n in "ab")
    for proj in (a, b):
        run(["dvc", "repro", "--force"], proj)
    for name in TINY["backbones"]:
        assert (a / f"metrics/{name}.json").read_bytes() == (b / f"metrics/{name}.json").read_bytes()
        assert_same_weights(a / run_paths(name)["model"], b / run_paths(name)["model"])


# --- refusals: one line naming the param, exit code 2, before any work ---------------------------


def stage_main(module, argv, tmp_path, monkeypatch, params, capsys):
    """Run a stage's main in-process in tmp_path; returns (exit code, stderr)."""
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), params))
    )
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    return exit_info.value.code, capsys.readouterr().err.strip()


TRAIN_ARGS = stage_cmd("train", "resnet18")[3:]


@pytest.mark.parametrize(
    "params,message",
    [  # params themselves: tests/test_params.py
        ({"train": {"epochs": 0}}, "params.yaml: train.epochs must be an integer >= 1, got 0"),
        ({"train": {"batch_size": 1000}}, "train.batch_size 1000 exceeds the 30 training images; lower it"),
    ],
)
def test_train_refuses_an_impossible_run_before_any_work(tmp_path, monkeypatch, capsys, params, message):
    import numpy as np

    import stages.train
    from stages.lib.data.dataset import file_records

    (tmp_path / "cache").mkdir()
    np.save(tmp_path / "cache/train.npy", np.zeros((30, 32, 32), np.uint8))  # a valid cache of 30 blank films
    (tmp_path / "cache/train.csv").write_text("filename,label\n" + "".join(f"{i}.png,normal\n" for i in range(30)))
    (tmp_path / "cache/meta.json").write_text(
        json.dumps(
            {
                "classes": ["normal", "bacteria", "virus", "COVID-19"],
                "preprocess": {"img_size": 32},
                "counts": {"train": {"normal": 30}},
                "files": file_records(tmp_path / "cache", ["train"]),
            }
        )
    )
    code, err = stage_main(stages.train, TRAIN_ARGS, tmp_path, monkeypatch, params, capsys)
    assert code == 2 and err == f"error: {message}"


def test_train_refuses_unknown_backbone(tmp_path, monkeypatch, capsys):
    import stages.train

    argv = stage_cmd("train", "vit_b16")[3:]
    code, err = stage_main(stages.train, argv, tmp_path, monkeypatch, {}, capsys)
    assert code == 2 and err == (
        f"error: unknown backbone 'vit_b16'; {REGISTRY} has records for {', '.join(BACKBONES)}"
    )


def test_non_finite_loss_stops_naming_epoch_and_batch():
    from stages.lib.model.training import train_one_epoch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4))
    loader = [(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))] * 3
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(UserError, match=r"resnet18 epoch 4/9, batch 1: the loss is nan; training diverged"):
        train_one_epoch(
            model,
            loader,
            lambda logits, y: logits.sum() * float("nan"),
            torch.optim.SGD(model.parameters(), lr=0.1),
            scaler,
            torch.device("cpu"),
            contextlib.nullcontext(),
            desc="resnet18 epoch 4/9",
        )


# --- outputs and loading ----------------------------------------------------------------------

WRITER = """
import sys
from stages.lib.core.files import write_json
big = [list(range(2000))] * 50
i = 0
while True:
    write_json(sys.argv[1], {"n": i % 2, "data": big})
    i += 1
"""


def test_killed_writer_leaves_a_whole_file(tmp_path):
    for delay in (0.0, 0.15, 0.3):
        target = tmp_path / f"out-{delay}.json"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT)
        while not target.exists() and proc.poll() is None:  # kill only once writes are under way
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert json.loads(target.read_text())["n"] in (0, 1)


def test_full_disk_fails_clearly_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"old": True})

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UserError, match=r"cannot write .*metrics.json: No space left on device; check free disk space"):
        write_json(target, {"old": False})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_evaluate_refuses_a_checkpoint_of_another_backbone_or_class_list(tmp_path):
    from stages.lib.model.checkpoints import save_checkpoint
    from stages.lib.model.inference import load_model
    from stages.lib.model.networks import build_model

    meta = {
        "backbone": "resnet18",
        "classes": ["normal", "bacteria", "virus", "COVID-19"],
        "dropout": 0.1,
        "preprocess": {"img_size": 32, "center_crop_ratio": 0.9, "clahe_clip_limit": 1.5, "clahe_tile_grid": 2},
    }
    path = tmp_path / "resnet18.pt"
    save_checkpoint(path, build_model("resnet18", 4, 0.1, pretrained=False), meta)
    with pytest.raises(UserError, match="holds a resnet18 model, not densenet121"):
        load_model(path, "densenet121")
    with pytest.raises(UserError, match="trained for classes"):
        load_model(path, "resnet18", classes=["normal", "pneumonia"])
    model, loaded = load_model(path, "resnet18", meta["preprocess"], meta["classes"])
    assert loaded["backbone"] == "resnet18"


OLD_META = {  # what the train stage wrote before the typed config (no runtime record)
    "backbone": "resnet18",
    "classes": ["normal", "bacteria", "virus", "COVID-19"],
    "img_size": 64,
    "preprocess": {"img_size": 64, "center_crop_ratio": 0.9, "clahe_clip_limit": 1.5, "clahe_tile_grid": 8},
    "dropout": 0.1,
    "pretrained": False,
    "epoch": 3,
    "val_macro_f1": 0.5,
    "epochs_run": 5,
}


def test_a_checkpoint_from_before_the_typed_config_still_loads(tmp_path):
    from stages.lib.model.inference import load_model
    from stages.lib.model.networks import build_model
    from stages.lib.params.schema import Preprocess

    model = build_model("resnet18", 4, 0.1, pretrained=False)
    torch.save({"state_dict": model.state_dict(), "meta": OLD_META}, tmp_path / "old.pt")
    loaded, meta = load_model(tmp_path / "old.pt", "resnet18", OLD_META["preprocess"], OLD_META["classes"])
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert meta["preprocess"] == Preprocess(img_size=64) and meta["epochs_run"] == 5


@pytest.mark.parametrize(
    "spoil,message",
    [
        (
            lambda ckpt: ckpt["meta"].pop("classes"),
            r"old.pt: its metadata key classes: field required \(an older or edited "
            r"checkpoint\); retrain it \(dvc repro --force train\)",
        ),
        (
            lambda ckpt: ckpt["state_dict"].pop("fc.1.bias"),
            r"old.pt: its weights do not fit today's resnet18 \(.*\); "
            r"retrain it \(dvc repro --force train@resnet18\)",
        ),
        (
            lambda ckpt: ckpt["meta"]["preprocess"].update(img_size="64"),
            r"old.pt: its metadata key preprocess.img_size: "
            r"input should be a valid integer, got '64' .*; retrain it",
        ),
    ],
)
def test_a_checkpoint_that_cannot_be_used_is_refused_saying_how_to_retrain(tmp_path, spoil, message):
    import copy

    from stages.lib.model.inference import load_model
    from stages.lib.model.networks import build_model

    ckpt = {
        "state_dict": build_model("resnet18", 4, 0.1, pretrained=False).state_dict(),
        "meta": copy.deepcopy(OLD_META),
    }
    spoil(ckpt)
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(UserError, match=message) as err:
        load_model(tmp_path / "old.pt")
    assert "\n" not in str(err.value)


def test_every_torch_load_in_stages_is_weights_only():
    calls = [
        (p, line)
        for p in (ROOT / "stages").rglob("*.py")
        for line in p.read_text().splitlines()
        if "torch.load(" in line
    ]
    assert calls and all("weights_only=True" in line for _, line in calls)


# --- precision -------------------------------------------------------------------------------

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize(
    "precision,device,bf16,expected",
    [
        ("auto", CPU, True, torch.float32),
        ("bf16", CPU, True, torch.float32),
        ("auto", CUDA, True, torch.bfloat16),
        ("auto", CUDA, False, torch.float16),
        ("fp16", CUDA, True, torch.float16),
        ("fp32", CUDA, True, torch.float32),
    ],
)
def test_precision_picks_the_autocast_dtype(monkeypatch, precision, device, bf16, expected):
    from stages.lib.model.runtime import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert autocast_dtype(precision, device) == expected


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    from stages.lib.model.runtime import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(UserError, match="train.precision bf16: Tesla T4 has no bf16; use auto or fp16"):
        autocast_dtype("bf16", CUDA)


def test_cpu_runs_fp32_without_a_scaler():
    from stages.lib.model.runtime import precision

    ctx, scaler = precision("fp16", CPU)
    assert isinstance(ctx, contextlib.nullcontext) and not scaler.is_enabled()


@pytest.mark.slow
def test_the_demo_started_from_any_shell_trains_and_scores_as_make_demo_did(demo_project, tmp_path, monkeypatch):
    """`cd demo && dvc repro` from a shell with one thread (OMP_NUM_THREADS=1, as a user's may be) retrains and
    rescores the session's `make demo` run with the 2 threads of demo/params.yaml (train.threads): the same
    weights, the same predictions. (When the thread count lived in the Makefile's environment, it did not.)"""
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(demo_project, proj, symlinks=True)
    demo, made = proj / "demo", demo_project / "demo"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    stages = ["train@resnet18-42", "evaluate@resnet18-42"]
    out = run(["dvc", "repro", "--force", "--single-item", *stages], demo).stdout
    assert out.count("2 CPU threads") == 2  # train's and evaluate's where-it-runs line
    paths = run_paths("resnet18")
    assert_same_weights(demo / paths["model"], made / paths["model"])
    for split in ("val", "test"):
        name = f"{paths['predictions']}/{split}.csv"
        assert (demo / name).read_bytes() == (made / name).read_bytes(), name

"""What the GPU path relies on, proven on the CPU: the GPU check starts on a bare Python, no stage
reaches the network, the training and validation loops read from the device once per epoch whatever
its length, one batch shape where cuDNN autotunes, and evaluate's mixed precision agrees with fp32."""

import collections
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT

CPU = torch.device("cpu")
# What a bare CUDA machine's Python lacks until .whl/ is unpacked (plus what the lock has in other majors).
BARE = (
    "pydantic",
    "dvc",
    "dvclive",
    "albumentations",
    "pydicom",
    "pytorch_grad_cam",
    "cv2",
    "sklearn",
    "matplotlib",
    "packaging",
    "scipy",
    "PIL",
    "tqdm",
)
BLOCKER = """
import sys
BLOCKED = set({blocked!r})


class Bare:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Bare())
"""
NO_NETWORK = """
import os, socket
_LOG = os.environ["NETWORK_LOG"]


def _refuse(what):
    def refuse(*args, **kwargs):
        with open(_LOG, "a") as f:
            f.write(f"{{what}} {{args[1:2] if what == 'connect' else args[:1]}}\\n")
        raise OSError("network blocked by the test")
    return refuse


_connect = socket.socket.connect


def _connect_checked(self, address):
    if self.family == socket.AF_UNIX:  # local pipes between processes are no network
        return _connect(self, address)
    return _refuse("connect")(self, address)


socket.socket.connect = _connect_checked
socket.socket.connect_ex = _connect_checked
socket.getaddrinfo = _refuse("getaddrinfo")
"""
OFFLINE_SWITCHES = ("NO_ALBUMENTATIONS_UPDATE", "DVC_NO_ANALYTICS", "DVC_STUDIO_OFFLINE")


def _sitecustomized(tmp_path, code: str, **env) -> dict:
    """The environment of a Python that runs `code` first (sitecustomize), with none of the project's
    offline switches inherited from this process."""
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(code)
    base = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES}
    return {**base, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", **env}


# --- 1. the GPU check on a bare machine ------------------------------------------------------------


def test_gpu_check_starts_with_only_torch_pyyaml_and_the_standard_library(tmp_path):
    env = _sitecustomized(tmp_path, BLOCKER.format(blocked=BARE))
    blocked = subprocess.run([sys.executable, "-c", "import cv2"], env=env, capture_output=True, text=True)
    assert "blocked by the test" in blocked.stderr  # the hook works
    helped = subprocess.run(
        [sys.executable, "-m", "tools.gpu.gpu_check", "--help"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "usage:" in helped.stdout and "--results" in helped.stdout, helped.stderr
    # Started for real: no .whl/, so it probes this (bare) Python, finds what is missing and says what to carry.
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.gpu.gpu_check",
            "--smoke",
            "--results",
            str(results),
            "--wheels",
            str(tmp_path / "no-wheels"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    check = json.loads((results / "gpu.json").read_text())["check"]
    assert check["modules"]["torch"] == torch.__version__ and check["modules"]["yaml"] != "ok"
    assert all(check["modules"][m].startswith("MISSING") for m in ("pydantic", "cv2", "albumentations", "dvclive"))
    assert (
        check["error"].startswith("cannot import ")
        and "pydantic" in check["error"]
        and "make gpu-wheels" in check["error"]
    )
    assert "Traceback" not in (results / "gpu_check.log").read_text()


def test_a_stray_file_in_the_wheel_folder_is_refused_by_name_and_no_goal_is_judged(tmp_path):
    """A stray .whl ended in a ValueError traceback, and the failed check still printed "goal: ... yes"."""
    folder = tmp_path / "whl"
    folder.mkdir()
    (folder / "stray.whl").write_bytes(b"not a wheel")
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.gpu.gpu_check", "--results", str(results), "--wheels", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    log = (results / "gpu_check.log").read_text()
    assert proc.returncode == 2 and "Traceback" not in log + proc.stderr, log + proc.stderr
    assert f"error: {folder}/ holds stray.whl, not named as a wheel is (name-version-python-abi-platform.whl); " in log
    assert "goal" not in log and "yes" not in log and log.splitlines()[-1].startswith("gpu check FAILED in ")
    assert json.loads((results / "gpu.json").read_text())["check"]["goals"] == {}


# --- 3. no network ----------------------------------------------------------------------------------


def test_no_stage_reaches_the_network_at_import_or_run(tmp_path, demo_project):
    log = tmp_path / "network.log"
    env = _sitecustomized(tmp_path, NO_NETWORK.format(), NETWORK_LOG=str(log))
    env["PYTHONPATH"] = f"{tmp_path / 'site'}{os.pathsep}{demo_project}"
    # The hook sees an attempt (albumentations' own version check, with the switch turned off here)...
    subprocess.run([sys.executable, "-c", "import albumentations"], env=env, capture_output=True, check=True)
    assert "getaddrinfo" in log.read_text()
    log.unlink()
    # ... and none from any stage module imported, nor from a stage run.
    modules = [
        "stages.preprocess",
        "stages.train",
        "stages.evaluate",
        "stages.combine",
        "stages.ensemble",
        "stages.report",
        "stages.predict",
        "tools.make_demo_data",
    ]
    subprocess.run(
        [sys.executable, "-c", "import " + ", ".join(modules)],
        env=env,
        capture_output=True,
        check=True,
        cwd=demo_project / "demo",
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.evaluate",
            "--backbone",
            "resnet18",
            "--cache",
            "cache",
            "--model",
            "models/resnet18/seed42.pt",
            "--metrics",
            str(out / "m.json"),
            "--predictions",
            str(out / "p"),
            "--gradcam",
            str(out / "g.png"),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=demo_project / "demo",
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "m.json").is_file() and not log.exists(), log.read_text()


# --- 5. a loop that never waits for the host -----------------------------------------------------------

HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__")


def _count_host_reads(monkeypatch) -> collections.Counter:
    counts = collections.Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 4),
    )


def _batches(n: int, size: int = 4):
    g = torch.Generator().manual_seed(n)
    return [
        (
            torch.randint(0, 256, (size, 1, 8, 8), dtype=torch.uint8, generator=g),
            torch.randint(0, 4, (size,), generator=g),
        )
        for _ in range(n)
    ]


def test_training_and_validation_read_the_device_as_often_for_3_batches_as_for_12(monkeypatch):
    from stages.lib.model.training import train_one_epoch, validate

    def reads(n_batches: int) -> tuple[collections.Counter, collections.Counter]:
        net = _small_net()
        # fused: what a CUDA run uses (the default CPU AdamW reads its step count every step)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        criterion = torch.nn.CrossEntropyLoss(weight=torch.ones(4))
        with monkeypatch.context() as m:
            counts = _count_host_reads(m)
            r = train_one_epoch(
                net, _batches(n_batches), criterion, optimizer, scaler, CPU, contextlib.nullcontext(), "t"
            )
            train = collections.Counter(counts)
            counts.clear()
            val = validate(net, _batches(n_batches), CPU, contextlib.nullcontext(), criterion)
        assert r.n == val.n == 4 * n_batches and np.isfinite(r.loss) and np.isfinite(val.loss)
        return train, collections.Counter(counts)

    (train3, val3), (train12, val12) = reads(3), reads(12)
    assert train3 == train12 and val3 == val12
    assert sum(train3.values()) <= 8 and sum(val3.values()) <= 8  # a handful per epoch, not per batch


# --- 4. one batch shape where cuDNN autotunes -----------------------------------------------------------


def test_padding_the_last_batch_to_one_shape_leaves_every_prediction_as_it_was():
    from stages.lib.model.inference import predict

    net = _small_net().eval()
    batches = _batches(2, size=4) + _batches(1, size=3)  # a short last batch
    shapes = []
    net.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    criterion = torch.nn.CrossEntropyLoss()
    plain = predict(net, batches, CPU, criterion=criterion)
    shapes.clear()
    padded = predict(net, batches, CPU, criterion=criterion, pad_to=4)
    assert set(shapes) == {(4, 3, 8, 8)} and len(padded[0]) == 11
    np.testing.assert_allclose(padded[0], plain[0], atol=1e-6)
    np.testing.assert_array_equal(padded[1], plain[1])
    assert padded[2] == pytest.approx(plain[2], abs=1e-6)


def test_where_cudnn_autotunes_the_train_loader_drops_its_partial_batch(tmp_path, monkeypatch):
    from helpers import NO_AUGMENT, SEED, tiny_cache
    from stages.lib.core.errors import UserError
    from stages.lib.model import training
    from stages.lib.params.schema import Train

    cache = str(tiny_cache(tmp_path / "cache"))  # 24 training images
    t = Train(batch_size=5, num_workers=0)
    assert [len(y) for _, y in training.make_loaders(cache, t, NO_AUGMENT, CPU, SEED)[0]] == [5] * 4 + [4]  # CPU: all
    monkeypatch.setattr(training, "autotuned", lambda device: True)
    assert [len(y) for _, y in training.make_loaders(cache, t, NO_AUGMENT, CPU, SEED)[0]] == [5] * 4
    with pytest.raises(UserError, match=r"^train.batch_size 25 exceeds the 24 training images each process draws"):
        training.make_loaders(cache, Train(batch_size=25, num_workers=0), NO_AUGMENT, CPU, SEED)  # no batch at all


# --- 6. evaluate's mixed precision against fp32 ------------------------------------------------------------


def test_the_agreement_rule_counts_films_that_keep_their_class_and_probabilities():
    from stages.lib.model.runtime import agreement

    ref = np.tile([[0.7, 0.1, 0.1, 0.1]], (200, 1))
    near = ref + [[-0.008, 0.008, 0, 0]]  # every probability within 0.01: agrees
    assert agreement(ref, near) == {
        "films": 200,
        "same_class": 1.0,
        "agreeing": 1.0,
        "max_prob_diff": 0.008,
        "ok": True,
    }
    one_off = near.copy()
    one_off[0] = [0.1, 0.7, 0.1, 0.1]  # 199 of 200 agree: 99.5%, the least that passes
    assert agreement(ref, one_off)["agreeing"] == 0.995 and agreement(ref, one_off)["ok"]
    two_off = one_off.copy()
    two_off[1] = ref[1] + [-0.02, 0.02, 0, 0]  # same class, but a probability moved by 0.02
    r = agreement(ref, two_off)
    assert r["same_class"] == 0.995 and r["agreeing"] == 0.99 and not r["ok"]


@pytest.mark.slow
def test_the_rule_judges_real_bf16_autocast_inference_against_fp32_on_cpu():
    from stages.lib.model.inference import predict
    from stages.lib.model.networks import build_model
    from stages.lib.model.runtime import MAX_PROB_DIFF, MIN_AGREEING, agreement

    torch.manual_seed(0)
    net = build_model("resnet18", 4, 0.0, pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randint(0, 256, (25, 1, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(25, dtype=torch.long))
        for _ in range(4)
    ]
    fp32, _, _ = predict(net, batches, CPU)
    bf16, _, _ = predict(net, batches, CPU, torch.autocast("cpu", dtype=torch.bfloat16))
    r = agreement(fp32, bf16)
    same, moved = fp32.argmax(1) == bf16.argmax(1), np.abs(fp32 - bf16).max(1)
    assert r["films"] == 100 and 0 < r["max_prob_diff"] == pytest.approx(moved.max(), abs=1e-5)  # bf16 really ran
    assert r["same_class"] == pytest.approx(same.mean(), abs=1e-4)
    assert r["agreeing"] == pytest.approx((same & (moved <= MAX_PROB_DIFF)).mean(), abs=1e-4)
    assert r["ok"] is bool(r["agreeing"] >= MIN_AGREEING)
    # An untrained network's near-ties flip: this one fails the rule (a trained one is measured by gpu-check).
    assert r["same_class"] < 1 and not r["ok"]


# --- 8. the check's table: each dvc stage's wall time from `dvc repro`'s output --------------------------


def test_the_check_times_each_stage_from_dvc_repros_running_stage_lines(tmp_path):
    from tools.gpu.gpu_check import Log, dvc_stage_seconds, run

    marks = []
    script = "echo \"Running stage 'train@resnet18-42':\"; sleep 0.5; echo \"Running stage 'evaluate@resnet18-42':\""
    code, seconds = run(["bash", "-c", script], Log(tmp_path / "log"), tmp_path, dict(os.environ), 60, marks)
    assert code == 0 and [name for _, name in marks] == ["train@resnet18-42", "evaluate@resnet18-42"]
    assert marks[1][0] - marks[0][0] >= 0.45
    times = dvc_stage_seconds(marks, seconds)
    assert list(times) == ["train@resnet18-42", "evaluate@resnet18-42"] and times["train@resnet18-42"] >= 0.4
    assert sum(times.values()) == pytest.approx(seconds - marks[0][0], abs=0.15)

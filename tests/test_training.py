"""The training loop's promises, in-process on a tiny cache and a linear model (seconds, not minutes)."""

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from helpers import NO_AUGMENT, SEED, SIZE, tiny_cache
from stages import CPU_PINS
from stages.lib.model import training
from stages.lib.model.inference import predict
from stages.lib.model.runtime import cpu_model, describe
from stages.lib.model.training import EpochResult, fit, make_loaders
from stages.lib.params.schema import Train

CPU = torch.device("cpu")


def linear_model(num_classes=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, num_classes))


def run_fit(tmp_path, monkeypatch, val_f1, **train):
    """fit() with scripted val macro-F1 per epoch; returns (progress, logged rows, epochs saved as best)."""
    scores = iter(val_f1)
    monkeypatch.setattr(training, "validate", lambda *a, **k: EpochResult(0.0, 0.0, next(scores), 8))
    t = Train(**{"batch_size": 8, "lr": 1e-3, "early_stopping_patience": 100, **train})
    loaders = make_loaders(str(tiny_cache(tmp_path / "cache")), t, NO_AUGMENT, CPU, SEED)
    rows, best = [], []
    progress = fit(
        linear_model(),
        *loaders,
        t,
        CPU,
        "tiny",
        SEED,
        on_epoch=rows.append,
        on_best=lambda model, epoch, score: best.append(epoch),
    )
    return progress, rows, best


def test_early_stopping_stops_when_patience_is_reached(tmp_path, monkeypatch):
    progress, rows, best = run_fit(
        tmp_path,
        monkeypatch,
        [0.5, 0.6, 0.55, 0.6, 0.59, 0.9, 0.9],
        epochs=7,
        early_stopping_patience=3,
        scheduler="cosine",
    )
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]  # 3 epochs without beating epoch 2's 0.6
    assert best == [1, 2] and progress.best_epoch == 2 and progress.best_val_macro_f1 == 0.6
    assert progress.epoch == 5 and progress.stale == 3 and progress.finished


def test_plateau_lowers_lr_by_factor_after_patience_down_to_min_lr(tmp_path, monkeypatch):
    _, rows, _ = run_fit(
        tmp_path,
        monkeypatch,
        [0.5] * 8,
        epochs=8,
        scheduler="plateau",
        plateau={"factor": 0.5, "patience": 1},
        min_lr=2e-4,
    )
    lrs = [r["lr"] for r in rows]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4])


def test_cosine_anneals_lr_over_the_epochs_to_min_lr(tmp_path, monkeypatch):
    _, rows, _ = run_fit(tmp_path, monkeypatch, [0.1, 0.2, 0.3, 0.4], epochs=4, scheduler="cosine", min_lr=1e-4)
    expected = [1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [r["lr"] for r in rows] == pytest.approx(expected)
    assert expected[0] == pytest.approx(1e-3) and expected[-1] < 3e-4


def test_class_weights_and_the_balanced_sampler_reach_fit(tmp_path, monkeypatch):
    seen = {}

    class Recording(nn.CrossEntropyLoss):
        def __init__(self, weight=None):
            super().__init__(weight=weight)
            seen["weight"], seen["labels"] = weight.tolist(), []

        def forward(self, logits, y):
            seen["labels"] += y.tolist()
            return super().forward(logits, y)

    monkeypatch.setattr(training.nn, "CrossEntropyLoss", Recording)
    t = Train(batch_size=8, epochs=4)
    loaders = make_loaders(str(tiny_cache(tmp_path / "cache", train_counts=(24, 4, 4, 4))), t, NO_AUGMENT, CPU, SEED)
    monkeypatch.setattr(training, "validate", lambda *a, **k: EpochResult(0.0, 0.0, 0.5, 8))
    fit(linear_model(), *loaders, t, CPU, "tiny", SEED)
    assert seen["weight"] == pytest.approx([36 / 24, 36 / 4, 36 / 4, 36 / 4])  # n_total / n_class, the study's
    share = np.bincount(seen["labels"], minlength=4) / len(seen["labels"])
    assert len(seen["labels"]) == 4 * 36 and share.min() > 0.15 and share[0] < 0.35  # unsampled, normal is 2/3


def test_workers_give_the_same_batches_as_no_workers(tmp_path):
    cache = str(tiny_cache(tmp_path / "cache"))

    def two_epochs(workers):
        train_loader, val_loader = make_loaders(cache, Train(batch_size=4, num_workers=workers), NO_AUGMENT, CPU, SEED)
        return [(x, y) for _ in range(2) for loader in (train_loader, val_loader) for x, y in loader]

    torch.manual_seed(0)
    plain, plain_rng = two_epochs(0), torch.get_rng_state()
    torch.manual_seed(0)
    parallel, parallel_rng = two_epochs(2), torch.get_rng_state()
    assert len(plain) == len(parallel) == 2 * (24 // 4 + 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, parallel))
    assert torch.equal(plain_rng, parallel_rng)  # the global stream, which dropout draws from, is left alike


def test_test_time_hflip_averages_each_image_with_its_mirror():
    model = linear_model().eval()
    x = torch.randint(0, 256, (5, 1, SIZE, SIZE), dtype=torch.uint8)
    loader = [(x, torch.zeros(5, dtype=torch.long))]
    plain, _, _ = predict(model, loader, CPU)
    mirrored, _, _ = predict(model, [(x.flip(-1), loader[0][1])], CPU)
    tta, _, _ = predict(model, loader, CPU, hflip=True)
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-3 and np.allclose(tta.sum(1), 1)


def test_the_where_it_runs_line_says_when_mixed_precision_has_no_gpu():
    line = describe(CPU, "auto", 0).line()
    assert line.startswith("runs on cpu (no CUDA device, ")
    assert (
        "precision fp32 (train.precision auto asks for mixed precision, which needs CUDA; none is visible) | "
        f"channels_last off | 0 DataLoader workers | {torch.get_num_threads()} CPU threads ({cpu_model()}, kernels "
        + " ".join(f"{k}={os.environ[k]}" for k in CPU_PINS)  # stages/__init__.py's pins, or the user's own
        + ") | torch "
        + str(torch.__version__)
    ) in line
    assert "(" not in describe(CPU, "fp32", 0).line().split("precision fp32")[1].split("|")[0]


def test_the_where_it_runs_line_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    runtime = describe(torch.device("cuda", 0), "auto", 8)
    assert runtime.line().startswith(
        "runs on cuda:0 (NVIDIA H100 80GB HBM3) | precision bf16 (auto) | "
        f"channels_last on | 8 DataLoader workers | {torch.get_num_threads()} CPU threads ({cpu_model()}, kernels "
    )
    assert runtime.as_dict()["precision"] == "bf16" and runtime.as_dict()["workers"] == 8

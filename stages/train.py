"""Stage `train@<backbone>`: cache/ -> models/<backbone>.pt (best val macro-F1) + DVCLive logs."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from dvclive import Live

from stages.lib.errors import UserError, cli
from stages.lib.data import verify_cache
from stages.lib.io import load_params
from stages.lib.models import build_model, check_backbone, ensure_pretrained
from stages.lib import distributed, provenance, resume
from stages.lib.training import PRECISIONS, fit, load_checkpoint, make_loaders, save_checkpoint, seed_everything

SCHEDULERS = ("plateau", "cosine")
PRECISION_CHOICES = ("auto", *PRECISIONS)


def check_params(t: dict) -> None:
    """Refuse impossible hyperparameters before any work starts, naming the param."""
    for key in ("epochs", "batch_size", "early_stopping_patience", "nproc"):
        v = t.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise UserError(f"train.{key} must be a positive integer, got {v!r}")
    for key in ("lr", "weight_decay", "min_lr"):
        v = t.get(key)
        if not isinstance(v, (int, float)) or v < 0 or (key == "lr" and v == 0):
            raise UserError(f"train.{key} must be a {'positive' if key == 'lr' else 'non-negative'} number, got {v!r}")
    if t.get("scheduler") not in SCHEDULERS:
        raise UserError(f"train.scheduler must be one of {', '.join(SCHEDULERS)}, got {t.get('scheduler')!r}")
    if not 0 <= t.get("dropout", -1) < 1:
        raise UserError(f"train.dropout must be in [0, 1), got {t.get('dropout')!r}")
    if t.get("precision") not in PRECISION_CHOICES:
        raise UserError(f"train.precision must be one of {', '.join(PRECISION_CHOICES)}, got {t.get('precision')!r}")
    if not isinstance(t.get("compile"), bool):
        raise UserError(f"train.compile must be true or false, got {t.get('compile')!r}")


def check_run(backbone: str, cache_dir: str, t: dict) -> dict:
    """Refuse a run that cannot work, before any process starts; returns the cache's meta.json."""
    check_backbone(backbone)
    check_params(t)
    cache_meta = verify_cache(cache_dir)  # a damaged cache is refused before any model is built
    n_train = sum(cache_meta["counts"]["train"].values())
    if t["batch_size"] > n_train:
        raise UserError(f"train.batch_size {t['batch_size']} exceeds the {n_train} training images; lower it")
    return cache_meta


def train(backbone: str, cache_dir: str, model_path: str, live_dir: str, resume_path: str, params: dict) -> dict | None:
    """Train one backbone, resuming an interrupted run; returns the best checkpoint's metadata.

    Under torchrun every rank trains and only rank 0 writes (and returns the metadata).
    """
    t, augment = params["train"], params["augment"]
    cache_meta = check_run(backbone, cache_dir, t)
    seed_everything(int(t["seed"]), bool(t["deterministic"]))
    device = distributed.init()
    main = distributed.is_main()
    model = build_model(backbone, len(cache_meta["classes"]), float(t["dropout"]), bool(t["pretrained"]))
    train_loader, val_loader = make_loaders(cache_dir, t, augment, device)
    meta = {
        "backbone": backbone,
        "classes": cache_meta["classes"],
        "img_size": cache_meta["preprocess"]["img_size"],
        "preprocess": cache_meta["preprocess"],
        "dropout": float(t["dropout"]),
        "pretrained": bool(t["pretrained"]),
    }
    trained_with = {"train": {k: v for k, v in t.items() if k != "backbones"}, "augment": augment}
    meta["provenance"] = provenance.stamp({"backbone": backbone, "preprocess": cache_meta["preprocess"], **trained_with},
                                          cache_meta.get("data"))

    fp = resume.fingerprint(backbone, trained_with, cache_dir)
    state, note = resume.load(resume_path, fp)
    if state is not None and not Path(model_path).is_file():
        state, note = None, f"{model_path} is missing, so the interrupted run cannot be resumed; training from epoch 1"
    if main:
        print(f"{backbone}: {note}", flush=True)
    if state is not None and main:
        resume.trim_live_logs(live_dir, state["progress"]["epoch"])

    def on_best(model, epoch, score):
        save_checkpoint(model_path, model, {**meta, "epoch": epoch, "val_macro_f1": score})

    def on_checkpoint(snapshot):
        if snapshot["progress"]["finished"]:  # nothing left to resume: keep only the marker
            snapshot = {"progress": snapshot["progress"]}
        resume.save(resume_path, snapshot, fp)

    live_or_not = (Live(dir=live_dir, resume=state is not None, dvcyaml=False, save_dvc_exp=False, report=None)
                   if main else contextlib.nullcontext())
    with live_or_not as live:
        def on_epoch(row: dict) -> None:  # fit calls it on rank 0 only
            live.step = row["epoch"]
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key.replace("train_", "train/").replace("val_", "val/"), value)
            live.make_summary()

        progress = fit(model, train_loader, val_loader, t, device, backbone, resume=state,
                       on_epoch=on_epoch, on_best=on_best, on_checkpoint=on_checkpoint)
        if main:
            live.summary.update(best_epoch=progress.best_epoch, best_val_macro_f1=progress.best_val_macro_f1,
                                epochs_run=progress.epoch)
            live.make_summary()
    distributed.shutdown()
    if not main:
        return None

    # Only now is the number of epochs run known: record it in the best checkpoint.
    best = load_checkpoint(model_path)
    model.load_state_dict(best["state_dict"])
    meta = {**best["meta"], "epochs_run": progress.epoch}
    save_checkpoint(model_path, model, meta)
    return meta


def launch_ranks(backbone: str, t: dict) -> int:
    """Run this stage again as `train.nproc` torchrun ranks (dvc.yaml's cmd stays the same); their exit code."""
    nproc, gpus = t["nproc"], torch.cuda.device_count()
    if torch.cuda.is_available() and nproc > gpus:
        raise UserError(f"train.nproc {nproc} exceeds the {gpus} visible GPU(s); lower it or set CUDA_VISIBLE_DEVICES")
    if t["pretrained"]:  # fail here in one line rather than in every rank, and download once
        ensure_pretrained(backbone)
    return distributed.launch(nproc, "stages.train", sys.argv[1:])


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--cache", required=True, help="preprocessed cache folder")
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="DVCLive folder for per-epoch logs")
    parser.add_argument("--resume", required=True, help="last-epoch checkpoint, kept to resume a killed run")
    args = parser.parse_args()
    params = load_params()
    check_run(args.backbone, args.cache, params["train"])
    if params["train"]["nproc"] > 1 and not distributed.under_torchrun():
        sys.exit(launch_ranks(args.backbone, params["train"]))
    meta = train(args.backbone, args.cache, args.model, args.live, args.resume, params)
    if meta is None:
        return
    print(f"{args.backbone}: best val macro-F1 {meta['val_macro_f1']:.4f} at epoch {meta['epoch']} "
          f"of {meta['epochs_run']}; saved {args.model}")


if __name__ == "__main__":
    main()

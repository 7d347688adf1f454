"""Stage `train@<backbone>`: cache/ -> models/<backbone>.pt (best val macro-F1) + DVCLive logs."""
from __future__ import annotations

import argparse
from pathlib import Path

from dvclive import Live

from stages.lib.errors import UserError, cli
from stages.lib.io import load_params, read_json
from stages.lib.models import build_model, check_backbone
from stages.lib import resume
from stages.lib.training import (fit, load_checkpoint, make_loaders, pick_device, save_checkpoint,
                                  seed_everything)

SCHEDULERS = ("plateau", "cosine")


def check_params(t: dict) -> None:
    """Refuse impossible hyperparameters before any work starts, naming the param."""
    for key in ("epochs", "batch_size", "early_stopping_patience"):
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


def train(backbone: str, cache_dir: str, model_path: str, live_dir: str, resume_path: str, params: dict) -> dict:
    """Train one backbone, resuming an interrupted run; returns the best checkpoint's metadata."""
    t, augment = params["train"], params["augment"]
    check_backbone(backbone)
    check_params(t)
    cache_meta = read_json(Path(cache_dir) / "meta.json")
    n_train = sum(cache_meta["counts"]["train"].values())
    if t["batch_size"] > n_train:
        raise UserError(f"train.batch_size {t['batch_size']} exceeds the {n_train} training images; lower it")

    seed_everything(int(t["seed"]), bool(t["deterministic"]))
    device = pick_device()
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
    fp = resume.fingerprint(backbone, trained_with, cache_dir)
    state, note = resume.load(resume_path, fp)
    if state is not None and not Path(model_path).is_file():
        state, note = None, f"{model_path} is missing, so the interrupted run cannot be resumed; training from epoch 1"
    print(f"{backbone}: {note}", flush=True)
    if state is not None:
        resume.trim_live_logs(live_dir, state["progress"]["epoch"])

    def on_best(model, epoch, score):
        save_checkpoint(model_path, model, {**meta, "epoch": epoch, "val_macro_f1": score})

    def on_checkpoint(snapshot):
        if snapshot["progress"]["finished"]:  # nothing left to resume: keep only the marker
            snapshot = {"progress": snapshot["progress"]}
        resume.save(resume_path, snapshot, fp)

    with Live(dir=live_dir, resume=state is not None, dvcyaml=False, save_dvc_exp=False, report=None) as live:
        def on_epoch(row: dict) -> None:
            live.step = row["epoch"]
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key.replace("train_", "train/").replace("val_", "val/"), value)
            live.make_summary()

        progress = fit(model, train_loader, val_loader, t, device, backbone, resume=state,
                       on_epoch=on_epoch, on_best=on_best, on_checkpoint=on_checkpoint)
        live.summary.update(best_epoch=progress.best_epoch, best_val_macro_f1=progress.best_val_macro_f1,
                            epochs_run=progress.epoch)
        live.make_summary()

    # Only now is the number of epochs run known: record it in the best checkpoint.
    best = load_checkpoint(model_path)
    model.load_state_dict(best["state_dict"])
    meta = {**best["meta"], "epochs_run": progress.epoch}
    save_checkpoint(model_path, model, meta)
    return meta


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--cache", required=True, help="preprocessed cache folder")
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="DVCLive folder for per-epoch logs")
    parser.add_argument("--resume", required=True, help="last-epoch checkpoint, kept to resume a killed run")
    args = parser.parse_args()
    meta = train(args.backbone, args.cache, args.model, args.live, args.resume, load_params())
    print(f"{args.backbone}: best val macro-F1 {meta['val_macro_f1']:.4f} at epoch {meta['epoch']} "
          f"of {meta['epochs_run']}; saved {args.model}")


if __name__ == "__main__":
    main()

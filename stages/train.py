"""Stage `train@<backbone>-<seed>`: cache/ -> models/<backbone>/seed<seed>.pt (best val macro-F1) + DVCLive logs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from dvclive import Live

from stages.lib.core import provenance
from stages.lib.core.errors import UserError, cli
from stages.lib.data.dataset import verify_cache
from stages.lib.model import distributed
from stages.lib.model.checkpoints import load_checkpoint, save_checkpoint
from stages.lib.model.fitting import fit
from stages.lib.model.registry import build_model, ensure_pretrained, spec
from stages.lib.model.resume import fingerprint, load_resume_state, save_resume_state, trim_live_logs
from stages.lib.model.runtime import describe, seed_everything
from stages.lib.model.training import make_loaders
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config, Train


def check_run(backbone: str, cache_dir: str, t: Train) -> dict:
    """Refuse a run that cannot work, before any process starts; returns the cache's meta.json."""
    spec(backbone)
    cache_meta = verify_cache(cache_dir)  # a damaged cache is refused before any model is built
    n_train = sum(cache_meta["counts"]["train"].values())
    if t.batch_size > n_train:
        raise UserError(f"train.batch_size {t.batch_size} exceeds the {n_train} training images; lower it")
    return cache_meta


class _Saver:
    """fit's callbacks that write files: the best model as it improves, the resume state after every epoch."""

    def __init__(self, model_path: str, resume_path: str, meta: dict, fp: str):
        self.model_path, self.resume_path, self.meta, self.fp = model_path, resume_path, meta, fp

    def on_best(self, model, epoch: int, score: float) -> None:
        save_checkpoint(self.model_path, model, {**self.meta, "epoch": epoch, "val_macro_f1": score})

    def on_checkpoint(self, snapshot: dict) -> None:
        if snapshot["progress"]["finished"]:  # nothing left to resume: keep only the marker
            snapshot = {"progress": snapshot["progress"]}
        save_resume_state(self.resume_path, snapshot, self.fp)


def _log_to(live) -> Callable[[dict], None]:
    """fit's on_epoch (rank 0 only): each epoch's row as DVCLive metrics train/* and val/*."""

    def on_epoch(row: dict) -> None:
        live.step = row["epoch"]
        for key, value in row.items():
            if key != "epoch":
                live.log_metric(key.replace("train_", "train/").replace("val_", "val/"), value)
        live.make_summary()

    return on_epoch


def _run_meta(backbone: str, seed: int, cfg: Config, cache_meta: dict, runtime: dict) -> tuple[dict, dict]:
    """(the checkpoint's metadata with its provenance stamp, the params the run trains with)."""
    t = cfg.train
    meta = {
        "backbone": backbone,
        "seed": seed,
        "classes": cache_meta["classes"],
        "img_size": cache_meta["preprocess"]["img_size"],
        "preprocess": cache_meta["preprocess"],
        "dropout": t.dropout,
        "pretrained": t.pretrained,
        "runtime": runtime,
    }
    trained_with = {"train": t.model_dump(), "augment": cfg.augment.model_dump()}
    meta["provenance"] = provenance.stamp(
        {"backbone": backbone, "seed": seed, "preprocess": cache_meta["preprocess"], **trained_with},
        cache_meta.get("data"),
    )
    return meta, trained_with


def _resume_state(resume_path: str, model_path: str, fp: str) -> tuple[dict | None, str]:
    """The interrupted run's state to resume (or None) and the sentence that says so."""
    state, note = load_resume_state(resume_path, fp)
    if state is not None and not Path(model_path).is_file():
        state, note = None, f"{model_path} is missing, so the interrupted run cannot be resumed; training from epoch 1"
    return state, note


# params: the run (backbone, seed), its paths as dvc.yaml's cmd gives them (cache, model, DVCLive folder,
# resume state), the config and the cache's meta.json.
def train(
    backbone: str,
    seed: int,
    cache_dir: str,
    model_path: str,
    live_dir: str,
    resume_path: str,
    cfg: Config,
    cache_meta: dict,
) -> dict | None:
    """Train one backbone with one seed, resuming an interrupted run; returns the best checkpoint's metadata
    (under torchrun every rank trains, and only rank 0 writes and returns it)."""
    t = cfg.train
    seed_everything(seed, t.deterministic)
    device = distributed.init()
    main = distributed.is_main()
    model = build_model(backbone, len(cache_meta["classes"]), t.dropout, t.pretrained)
    train_loader, val_loader = make_loaders(cache_dir, t, cfg.augment, device, seed)
    runtime = describe(device, t.precision, train_loader.num_workers)
    meta, trained_with = _run_meta(backbone, seed, cfg, cache_meta, runtime.as_dict())
    fp = fingerprint(backbone, {"seed": seed, **trained_with}, cache_dir)
    state, note = _resume_state(resume_path, model_path, fp)
    if main:
        print(f"{backbone}: {runtime.line()}\n{backbone}: {note}", flush=True)
        if state is not None:
            trim_live_logs(live_dir, state["progress"]["epoch"])

    saver = _Saver(model_path, resume_path, meta, fp)
    live_or_not = (
        Live(dir=live_dir, resume=state is not None, dvcyaml=False, save_dvc_exp=False, report=None)
        if main
        else contextlib.nullcontext()
    )
    with live_or_not as live:
        if main:
            live.summary["runtime"] = runtime.as_dict()
        progress = fit(
            model,
            train_loader,
            val_loader,
            t,
            device,
            f"{backbone} seed {seed}",
            seed,
            resume=state,
            on_epoch=_log_to(live),
            on_best=saver.on_best,
            on_checkpoint=saver.on_checkpoint,
        )
        if main:
            live.summary.update(
                best_epoch=progress.best_epoch, best_val_macro_f1=progress.best_val_macro_f1, epochs_run=progress.epoch
            )
            live.make_summary()
    distributed.shutdown()
    if not main:
        return None

    return _record_epochs_run(model, model_path, progress.epoch)


def _record_epochs_run(model, model_path: str, epochs_run: int) -> dict:
    """Only once training ends is the number of epochs run known: the best checkpoint records it."""
    best = load_checkpoint(model_path)
    model.load_state_dict(best["state_dict"])
    meta = {**best["meta"], "epochs_run": epochs_run}
    save_checkpoint(model_path, model, meta)
    return meta


def launch_ranks(backbone: str, t: Train) -> int:
    """Run this stage again as `train.nproc` torchrun ranks (dvc.yaml's cmd stays the same); their exit code."""
    gpus = torch.cuda.device_count()
    if torch.cuda.is_available() and t.nproc > gpus:
        raise UserError(
            f"train.nproc {t.nproc} exceeds the {gpus} visible GPU(s); lower it or set CUDA_VISIBLE_DEVICES"
        )
    if t.pretrained:  # fail here in one line rather than in every rank, and download once
        ensure_pretrained(backbone)
    return distributed.launch(t.nproc, "stages.train", sys.argv[1:])


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of params' seeds)")
    parser.add_argument("--cache", required=True, help="preprocessed cache folder")
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="DVCLive folder for per-epoch logs")
    parser.add_argument("--resume", required=True, help="last-epoch checkpoint, kept to resume a killed run")
    args = parser.parse_args()
    cfg = load_params()
    cache_meta = check_run(args.backbone, args.cache, cfg.train)
    if cfg.train.nproc > 1 and not distributed.under_torchrun():
        sys.exit(launch_ranks(args.backbone, cfg.train))
    meta = train(args.backbone, args.seed, args.cache, args.model, args.live, args.resume, cfg, cache_meta)
    if meta is None:
        return
    print(
        f"{args.backbone} seed {args.seed}: best val macro-F1 {meta['val_macro_f1']:.4f} at epoch {meta['epoch']} "
        f"of {meta['epochs_run']}; saved {args.model}"
    )


if __name__ == "__main__":
    main()

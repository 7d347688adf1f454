"""Stage `train@<backbone>-<seed>`: cache/ -> models/<backbone>/seed<seed>.pt (best val macro-F1) + DVCLive logs.

The run is read from the command line and params, checked (the backbone, the cache, the batch size) before
any process starts, then trained here or as `train.nproc` torchrun ranks (each running this module again):
the network built, the loaders made, a killed run's state resumed, the epochs fitted; as it trains, the best
model is written as it improves, the resume state after every epoch and the DVCLive logs; at the end the best
checkpoint records the epochs run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from dvclive import Live

from stages.lib.core import provenance
from stages.lib.core.backbones import spec
from stages.lib.core.errors import Interrupted, UserError, cli
from stages.lib.data.dataset import verify_cache
from stages.lib.model import distributed
from stages.lib.model.checkpoints import load_checkpoint, save_checkpoint
from stages.lib.model.networks import build_model, ensure_pretrained
from stages.lib.model.resume import fingerprint, load_resume_state, save_resume_state, trim_live_logs
from stages.lib.model.runtime import describe, seed_everything, use_threads
from stages.lib.model.training import fit, make_loaders
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Config, Train


@dataclass(frozen=True)
class TrainRun:
    """One run as dvc.yaml's cmd names it: the backbone, the seed, and its paths (the cache to read, the
    best model to write, the DVCLive folder, the resume state kept to resume a killed run)."""

    backbone: str
    seed: int
    cache: str
    model: str
    live: str
    resume: str


def train(cfg: Config, run: TrainRun) -> int | None:
    """The train stage: refuse a run that cannot work, then train it in this process, or as `train.nproc`
    torchrun ranks when it asks for several and this process is not one of them (their exit code; else None)."""
    cache_meta = check_run(run.backbone, run.cache, cfg.train)
    if cfg.train.nproc > 1 and not distributed.under_torchrun():
        return launch_ranks(run.backbone, cfg.train)
    meta = _train_here(cfg, run, cache_meta)
    if meta is not None:
        print(
            f"{run.backbone} seed {run.seed}: best val macro-F1 {meta['val_macro_f1']:.4f} at epoch {meta['epoch']} "
            f"of {meta['epochs_run']}; saved {run.model}"
        )
    return None


def check_run(backbone: str, cache_dir: str, t: Train) -> dict:
    """Refuse a run that cannot work, before any process starts; returns the cache's meta.json."""
    spec(backbone)
    cache_meta = verify_cache(cache_dir)  # a damaged cache is refused before any model is built
    n_train = sum(cache_meta["counts"]["train"].values())
    if t.batch_size > n_train:
        raise UserError(f"train.batch_size {t.batch_size} exceeds the {n_train} training images; lower it")
    return cache_meta


def launch_ranks(backbone: str, t: Train) -> int:
    """Run the train stage again as `train.nproc` torchrun ranks (dvc.yaml's cmd stays the same); their exit code."""
    gpus = torch.cuda.device_count()
    if torch.cuda.is_available() and t.nproc > gpus:
        raise UserError(
            f"train.nproc {t.nproc} exceeds the {gpus} visible GPU(s); lower it or set CUDA_VISIBLE_DEVICES"
        )
    if t.pretrained:  # fail here in one line rather than in every rank, and download once
        ensure_pretrained(backbone)
    return distributed.launch(t.nproc, "stages.train", sys.argv[1:])


def _train_here(cfg: Config, run: TrainRun, cache_meta: dict) -> dict | None:
    """Train in this process, resuming an interrupted run; returns the best checkpoint's metadata
    (under torchrun every rank trains, and only rank 0 writes and returns it)."""
    t = cfg.train
    use_threads(t.threads)
    seed_everything(run.seed, t.deterministic)
    device = distributed.init()
    main = distributed.is_main()
    model = build_model(run.backbone, len(cache_meta["classes"]), t.dropout, t.pretrained)
    train_loader, val_loader = make_loaders(run.cache, t, cfg.augment, device, run.seed)
    runtime = describe(device, t.precision, train_loader.num_workers)
    meta, trained_with = _run_meta(cfg, run, cache_meta, runtime.as_dict())
    fp = fingerprint(run.backbone, {"seed": run.seed, **trained_with}, run.cache)
    state, note = load_resume_state(run.resume, fp, run.model)
    if main:
        print(f"{run.backbone}: {runtime.line()}\n{run.backbone}: {note}", flush=True)
        if state is not None:
            trim_live_logs(run.live, state["progress"]["epoch"])

    saver = _Saver(run, meta, fp)
    live_or_not = (
        Live(dir=run.live, resume=state is not None, dvcyaml=False, save_dvc_exp=False, report=None)
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
            f"{run.backbone} seed {run.seed}",
            run.seed,
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

    return _record_epochs_run(model, run.model, progress.epoch)


def _run_meta(cfg: Config, run: TrainRun, cache_meta: dict, runtime: dict) -> tuple[dict, dict]:
    """(the checkpoint's metadata with its provenance stamp, the params the run trains with)."""
    t = cfg.train
    meta = {
        "backbone": run.backbone,
        "seed": run.seed,
        "classes": cache_meta["classes"],
        "img_size": cache_meta["preprocess"]["img_size"],
        "preprocess": cache_meta["preprocess"],
        "dropout": t.dropout,
        "pretrained": t.pretrained,
        "runtime": runtime,
    }
    trained_with = {"train": t.model_dump(), "augment": cfg.augment.model_dump()}
    meta["provenance"] = provenance.stamp(
        {"backbone": run.backbone, "seed": run.seed, "preprocess": cache_meta["preprocess"], **trained_with},
        cache_meta.get("data"),
    )
    return meta, trained_with


class _Saver:
    """fit's callbacks that write files: the best model as it improves, the resume state after every epoch."""

    def __init__(self, run: TrainRun, meta: dict, fp: str):
        self.run, self.meta, self.fp = run, meta, fp

    def on_best(self, model, epoch: int, score: float) -> None:
        save_checkpoint(self.run.model, model, {**self.meta, "epoch": epoch, "val_macro_f1": score})

    def on_checkpoint(self, snapshot: dict) -> None:
        if snapshot["progress"]["finished"]:  # nothing left to resume: keep only the marker
            snapshot = {"progress": snapshot["progress"]}
        save_resume_state(self.run.resume, snapshot, self.fp)


def _log_to(live) -> Callable[[dict], None]:
    """fit's on_epoch (rank 0 only): each epoch's row as DVCLive metrics train/* and val/*."""

    def on_epoch(row: dict) -> None:
        live.step = row["epoch"]
        for key, value in row.items():
            if key != "epoch":
                live.log_metric(key.replace("train_", "train/").replace("val_", "val/"), value)
        live.make_summary()

    return on_epoch


def _record_epochs_run(model, model_path: str, epochs_run: int) -> dict:
    """Only once training ends is the number of epochs run known: the best checkpoint records it."""
    best = load_checkpoint(model_path)
    model.load_state_dict(best["state_dict"])
    meta = {**best["meta"], "epochs_run": epochs_run}
    save_checkpoint(model_path, model, meta)
    return meta


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of params' seeds)")
    parser.add_argument("--cache", required=True, help="preprocessed cache folder")
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--live", required=True, help="DVCLive folder for per-epoch logs")
    parser.add_argument("--resume", required=True, help="last-epoch checkpoint, kept to resume a killed run")
    args = parser.parse_args()
    try:
        ranks_exit = train(load_params(), TrainRun(**vars(args)))
    except KeyboardInterrupt:
        raise Interrupted(
            f"{args.resume} holds the last finished epoch (none before the first ends): rerunning resumes there"
        ) from None
    if ranks_exit is not None:  # train.nproc > 1: this process launched the ranks, whose exit code is the stage's
        sys.exit(ranks_exit)


if __name__ == "__main__":
    main()

"""Wall time of one training epoch: our loop vs the study's loop, same model, images and batch.

    python -m bench.epoch [--img-size 64] [--workers 0] [--repeats 2]   -> bench/results/epoch.json

Ours: the train stage's own `train_one_epoch` + `validate` over the preprocess cache.
Study: its Dataset decodes + CLAHEs + resizes every image every epoch, and after training it runs
a second full inference pass over the training set for train metrics, then the val pass.
Same ResNet-18 (from scratch), same initial weights, optimizer, sampler, batch size, workers and
threads; CPU. Epochs alternate ours/study after one warm-up each; the best of `--repeats` counts.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
from pathlib import Path

import torch
from torch import nn

from bench import common
from stages.lib.data import class_weights
from stages.lib.models import build_model
from stages.lib.training import make_loaders, train_one_epoch, validate

CPU = torch.device("cpu")


def our_epoch(model, optimizer, criterion, train_loader, val_loader) -> None:
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(model, train_loader, criterion, optimizer, scaler, CPU, contextlib.nullcontext(), desc="ours")
    validate(model, val_loader, CPU, contextlib.nullcontext(), criterion)


@torch.no_grad()
def _inference(model, loader, criterion) -> None:
    model.eval()
    for x, y in loader:
        criterion(model(x), y).item()


def study_epoch(model, optimizer, criterion, train_loader, train_eval_loader, val_loader) -> None:
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()
    _inference(model, train_eval_loader, criterion)  # the study's extra pass for train metrics
    _inference(model, val_loader, criterion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, both loops (0: the CPU default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    p = common.params()
    pre = p.preprocess.model_copy(update={"img_size": args.img_size})
    t = p.train.model_copy(update={"num_workers": args.workers})
    batch, seed = t.batch_size, t.seed
    with common.tempdir() as tmp:
        data, source = common.images(Path(tmp))
        cache = common.cache(data, Path(tmp), pre)
        train_loader, val_loader = make_loaders(str(cache), t, p.augment, CPU)
        study_train = common.loader(common.StudySplit(data, "train", pre, p.augment, seed), batch, args.workers, seed)
        plain = dict(batch_size=batch, num_workers=args.workers)
        study_train_eval = torch.utils.data.DataLoader(common.StudySplit(data, "train", pre, None), **plain)
        study_val = torch.utils.data.DataLoader(common.StudySplit(data, "val", pre, None), **plain)

        torch.manual_seed(seed)
        init = build_model(args.backbone, 4, t.dropout, pretrained=False)
        weights = torch.as_tensor(class_weights(train_loader.dataset.labels, 4), dtype=torch.float32)
        criterion = nn.CrossEntropyLoss(weight=weights)

        def setup():
            model = copy.deepcopy(init)
            return model, torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)

        ours_model, ours_opt = setup()
        study_model, study_opt = setup()
        run_ours = lambda: our_epoch(ours_model, ours_opt, criterion, train_loader, val_loader)  # noqa: E731
        run_study = lambda: study_epoch(study_model, study_opt, criterion, study_train, study_train_eval, study_val)  # noqa: E731
        run_ours(), run_study()  # warm-up: allocator, first-call costs, page cache
        ours_s, study_s = [], []
        for _ in range(args.repeats):
            ours_s.append(common.timed(run_ours))
            study_s.append(common.timed(run_study))
    result = {
        "ours_s": round(min(ours_s), 3), "study_s": round(min(study_s), 3),
        "speedup": round(min(study_s) / min(ours_s), 2),
        "backbone": args.backbone, "img_size": args.img_size, "batch_size": batch, "workers": args.workers,
        "train_images": len(train_loader.dataset), "val_images": len(val_loader.dataset),
        "data": source, "machine": common.machine(),
    }
    path = common.save("epoch", result)
    print(f"epoch, {args.backbone} at {args.img_size} px, {result['train_images']} train + {result['val_images']} val "
          f"images, batch {batch}, {args.workers} workers ({source}):\n"
          f"  ours  {result['ours_s']:7.2f} s (cache + augment; train metrics from the training pass)\n"
          f"  study {result['study_s']:7.2f} s (decode + CLAHE + resize per epoch; extra train-set inference pass)\n"
          f"  speedup {result['speedup']:.2f}x  -> {path}")


if __name__ == "__main__":
    main()

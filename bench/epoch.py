"""Wall time of one training epoch on CPU: our loop vs the study's loop, same model, images and batch.

    python -m bench.epoch                       -> bench/results/epoch.json
    python -m bench.epoch --smoke --out X.json  # tiny synthetic run that checks the script

Ours: the train stage's own `train_one_epoch` + `validate` over the preprocess cache.
Study: its Dataset decodes + CLAHEs + resizes every image every epoch, and after training it runs
a second full inference pass over the training set for train metrics, then the val pass.
Same backbone (from scratch), initial weights, optimizer, sampler, batch size, threads and
DataLoader workers (the study's max(1, cores // 2) for both unless --workers says otherwise).
Headline at params' img_size (the study's 256 px), other sizes under `other_sizes`. After one
warm-up epoch each, the two loops run in turn `--repeats` times; each epoch's passes are timed.

At the headline size `breakdown` says where the time goes, measured once after the repeats:
`model_s`, the same passes fed batches already in memory (no loading at all), and `loader_s`,
each loader iterated with no model. `train_pass_excess_s` is a side's train pass minus both: > 0
when model and loader workers slow each other down on shared cores, < 0 when loading overlapped
the model. `speedup_if_data_were_free` is the ratio the study's extra inference pass alone would
leave: what any loader could at best achieve at this size on this CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bench import common
from stages.lib.core.errors import cli
from stages.lib.data.dataset import class_weights
from stages.lib.model.inference import predict
from stages.lib.model.training import train_one_epoch, validate

CPU = torch.device("cpu")
NO_AUTOCAST = contextlib.nullcontext()
SMOKE_SIZES = {"train": 12, "val": 4, "test": 4}


def timed_parts(**passes) -> dict:
    """Run each pass in order; {name: seconds}."""
    return {name: round(common.timed(fn)[0], 3) for name, fn in passes.items()}


@torch.no_grad()
def _inference(model, loader, criterion) -> None:
    model.eval()
    for x, y in loader:
        criterion(model(x), y).item()


def study_train_pass(model, optimizer, criterion, loader) -> None:
    model.train()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()


class Loops:
    """Both loops at one image size, each with its own copy of the same initial model."""

    def __init__(self, data: Path, cache: Path, s: common.Settings, backbone: str, workers: int):
        self.train, self.val = s.loaders(cache, CPU, workers)
        self.study_train = common.loader(common.StudySplit(data, "train", s, augment=True), s, workers)
        self.study_train_eval = common.loader(
            common.StudySplit(data, "train", s, augment=False), s, workers, balanced=False
        )
        self.study_val = common.loader(common.StudySplit(data, "val", s, augment=False), s, workers, balanced=False)
        self.n_train = common.same_images(self.train.dataset, self.study_train.dataset)
        torch.manual_seed(s.seed)
        init = s.model(backbone)
        weights = torch.as_tensor(class_weights(self.train.dataset.labels, len(s.classes)), dtype=torch.float32)
        self.criterion = nn.CrossEntropyLoss(weight=weights)
        self.ours_model, self.ours_opt = self._setup(init, s)
        self.study_model, self.study_opt = self._setup(init, s)

    @staticmethod
    def _setup(init: nn.Module, s: common.Settings):
        model = copy.deepcopy(init)
        return model, s.optimizer(model)

    def ours(self) -> dict:
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        return timed_parts(
            train_pass=lambda: train_one_epoch(
                self.ours_model, self.train, self.criterion, self.ours_opt, scaler, CPU, NO_AUTOCAST, desc="ours"
            ),
            val_pass=lambda: validate(self.ours_model, self.val, CPU, NO_AUTOCAST, self.criterion),
        )

    def study(self) -> dict:
        return timed_parts(
            train_pass=lambda: study_train_pass(self.study_model, self.study_opt, self.criterion, self.study_train),
            train_eval_pass=lambda: _inference(
                self.study_model, self.study_train_eval, self.criterion
            ),  # the study's extra pass
            val_pass=lambda: _inference(self.study_model, self.study_val, self.criterion),
        )

    def breakdown(self) -> dict:
        """Model alone (batches already in memory) and each loader alone, one pass each."""
        train_batches, val_batches = list(self.train), list(self.val)
        eval_batches = [(x, y) for x, y in train_batches]  # same count and shape as the study's extra pass
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        model = timed_parts(
            train_pass=lambda: train_one_epoch(
                self.ours_model, train_batches, self.criterion, self.ours_opt, scaler, CPU, NO_AUTOCAST, desc="model"
            ),
            train_eval_pass=lambda: predict(self.ours_model, eval_batches, CPU, NO_AUTOCAST, self.criterion),
            val_pass=lambda: predict(self.ours_model, val_batches, CPU, NO_AUTOCAST, self.criterion),
        )
        loaders = {
            "ours": timed_parts(train=lambda: list(self.train), val=lambda: list(self.val)),
            "study": timed_parts(
                train=lambda: list(self.study_train),
                train_eval=lambda: list(self.study_train_eval),
                val=lambda: list(self.study_val),
            ),
        }
        free = (model["train_pass"] + model["train_eval_pass"] + model["val_pass"]) / (
            model["train_pass"] + model["val_pass"]
        )
        return {"model_s": model, "loader_s": loaders, "speedup_if_data_were_free": round(free, 2)}


# params: one measurement's data, scratch folder and settings, and the four choices the command line makes.
def measure(
    data: Path, tmp: Path, s: common.Settings, backbone: str, workers: int, repeats: int, with_breakdown: bool
) -> dict:
    loops = Loops(data, common.cache(data, tmp, s), s, backbone, workers)
    runs = common.interleaved({"ours": loops.ours, "study": loops.study}, repeats)
    result = {"img_size": s.img_size}
    for side in ("ours", "study"):
        result[f"{side}_s"] = common.spread([seconds for seconds, _ in runs[side]])
        parts = [p for _, p in runs[side]]
        result[f"{side}_parts_s"] = {k: round(statistics.median(p[k] for p in parts), 3) for k in parts[0]}
    o, st = result["ours_s"], result["study_s"]
    result = {
        "img_size": s.img_size,
        "speedup": round(st["median"] / o["median"], 2),
        "speedup_range": [round(st["min"] / o["max"], 2), round(st["max"] / o["min"], 2)],
        **result,
        "train_images": loops.n_train,
        "val_images": len(loops.val.dataset),
    }
    if with_breakdown:
        b = result["breakdown"] = loops.breakdown()
        # > 0: model and loader slow each other down (workers share the cores); < 0: loading overlapped the model
        b["train_pass_excess_s"] = {
            side: round(
                result[f"{side}_parts_s"]["train_pass"] - b["model_s"]["train_pass"] - b["loader_s"][side]["train"], 3
            )
            for side in ("ours", "study")
        }
    return result


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workers",
        type=int,
        default=common.study_workers(),
        help="DataLoader workers, both loops (default: the study's max(1, cores // 2))",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loop and size (>= 3)")
    parser.add_argument("--other-sizes", type=int, nargs="*", default=[64], help="image sizes besides params' img_size")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument(
        "--data", type=Path, default=None, help="course-layout images (default: ../shared/data/cxr4, else synthetic)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic images at 32 px: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/epoch.json)")
    args = parser.parse_args()
    common.check_repeats(args.repeats, args.smoke)
    s = common.settings()
    if args.smoke:
        s, args.other_sizes = s.at_size(32).with_data(min_val=1), [16]
    start = time.perf_counter()
    with common.tempdir() as tmp:
        data, source = common.images(Path(tmp), SMOKE_SIZES if args.smoke else None, args.data)
        head = measure(data, Path(tmp), s, args.backbone, args.workers, args.repeats, with_breakdown=True)
        others = [
            measure(data, Path(tmp), s.at_size(size), args.backbone, args.workers, args.repeats, with_breakdown=False)
            for size in args.other_sizes
        ]
    result = {
        **head,
        "repeats": args.repeats,
        "backbone": args.backbone,
        "batch_size": s.batch_size,
        "workers": args.workers,
        "workers_rule": "both loops get the same workers; default the study's max(1, cores // 2)",
        "data": source,
        "smoke": args.smoke,
        "other_sizes": others,
        "elapsed_s": round(time.perf_counter() - start, 1),
        **common.stamp(args.repeats),
    }
    path = common.save("epoch", result, args.out)
    print(
        f"epoch, {args.backbone}, {head['train_images']} train + {head['val_images']} val images, batch {s.batch_size}, "
        f"{args.workers} workers ({source}):"
    )
    for r in [head, *others]:
        print(
            f"  {r['img_size']:4d} px  ours {r['ours_s']['median']:7.2f} s   study {r['study_s']['median']:7.2f} s   "
            f"speedup {r['speedup']:.2f}x (range {r['speedup_range'][0]}-{r['speedup_range'][1]})"
        )
    b = head["breakdown"]
    print(
        f"  at {head['img_size']} px the model alone takes {b['model_s']}; loaders alone {b['loader_s']}; "
        f"with free data the speedup would be {b['speedup_if_data_were_free']}x\n-> {path}"
    )


if __name__ == "__main__":
    main()

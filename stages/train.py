"""Stage `train@<backbone>-<seed>`: cache/ -> models/<backbone>/seed<seed>.pt (best val macro-F1) + DVCLive logs."""

from __future__ import annotations

import argparse
import sys

from stages.lib.core.errors import Interrupted, cli
from stages.lib.model.training_run import TrainRun, train
from stages.lib.params.loader import load_params


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

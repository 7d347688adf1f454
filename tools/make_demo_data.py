"""Write the synthetic demo dataset (course layout) to a folder: python -m tools.make_demo_data data"""
from __future__ import annotations

import argparse

from stages.lib.synthetic import make_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="folder to create, e.g. data")
    parser.add_argument("--train", type=int, default=360)
    parser.add_argument("--val", type=int, default=90)
    parser.add_argument("--test", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = make_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed)
    for split, c in counts.items():
        print(f"{split}: " + ", ".join(f"{k} {v}" for k, v in c.items()))


if __name__ == "__main__":
    main()

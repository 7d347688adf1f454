"""Write the synthetic demo dataset (course layout) to a folder: python -m tools.make_demo_data data
[--external data_external --external-size 60]: also a shifted external set (manifest layout, no COVID-19)."""

from __future__ import annotations

import argparse

from stages.lib.core.errors import Interrupted, cli
from stages.lib.data.synthetic import make_dataset, make_external


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="folder to create, e.g. data")
    parser.add_argument("--train", type=int, default=360)
    parser.add_argument("--val", type=int, default=90)
    parser.add_argument("--test", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--external", help="folder for the external set drawn with the shifted acquisition")
    parser.add_argument("--external-size", type=int, default=60)
    args = parser.parse_args()
    try:
        counts = make_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed)
        for split, c in counts.items():
            print(f"{split}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        if args.external:
            c = make_external(args.external, args.external_size, seed=args.seed)
            print("external (shifted): " + ", ".join(f"{k} {v}" for k, v in c.items()))
    except KeyboardInterrupt:
        raise Interrupted(
            f"the films written so far are in {args.out} (a split's CSV comes after its films); "
            "rerun to write them all (same seed, same pixels)"
        ) from None


if __name__ == "__main__":
    main()

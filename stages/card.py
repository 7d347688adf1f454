"""Write one model card from its metrics file (the evaluate, combine and ensemble stages write every card
themselves; this is the same call by hand, e.g. after editing docs/notice.md outside DVC):

    python -m stages.card --metrics metrics/resnet18/seed42.json --card models/resnet18/seed42.card.md

Refused in one line while the metrics file does not exist (the run has not been evaluated yet).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.core.errors import cli
from stages.lib.report import cards


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--metrics",
        required=True,
        help="the model's metrics file (metrics/<backbone>/seed<seed>.json, "
        "metrics/<backbone>.json or metrics/ensemble.json)",
    )
    cards.add_arguments(parser)
    parser.add_argument("--synthetic", action="store_true", help="mark the data as synthetic (the demo)")
    args = parser.parse_args()
    if not args.card:
        parser.error("--card is required: the card's path (beside the model: <model>.card.md)")
    card, name = args.card, Path(args.card).name.removesuffix(".card.md")
    cards.write_card_from(args, name, args.synthetic)
    print(f"wrote {card}")


if __name__ == "__main__":
    main()

"""Stage `report`: predictions + DVCLive logs -> figures (PNG), per-epoch curves (CSV for `dvc plots`)
and metrics/summary.md: every model's numbers with CIs, each backbone's seeds, and paired
comparisons of the models with each other, the ensemble and both shortcuts (file metadata only, the
film outside the lungs only), each model with the lungs hidden; and the summary again as one
self-contained HTML file (metrics/report.html).

The numbers are recomputed from the per-image predictions with the functions evaluate, combine and
ensemble use (`score_split`, `seed_block`, external `score`, seeded bootstraps), so they match
metrics/<model>.json exactly; reading those JSON files instead would need a dependency on metrics/,
where this stage writes summary.md.
"""

from __future__ import annotations

import argparse

from stages.lib.core.errors import cli
from stages.lib.params.loader import load_params
from stages.lib.report.report_files import ReportPaths, write_report


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--predictions",
        required=True,
        help="folder with <backbone>/seeds/seed<seed>/{val,test}.csv, shortcut/ and pixel_shortcut/",
    )
    parser.add_argument("--live", required=True, help="folder with <backbone>/seed<seed>/ DVCLive logs")
    parser.add_argument("--cache-meta", required=True, help="the preprocess cache's meta.json")
    parser.add_argument("--data-report", required=True, help="preprocess's data report (shortcut audit)")
    parser.add_argument("--figures", required=True, help="folder for the PNG figures")
    parser.add_argument("--curves", required=True, help="folder for the per-epoch curves (train.csv, val.csv)")
    parser.add_argument("--gradcam", required=True, help="folder of the Grad-CAM figures (embedded, not written)")
    parser.add_argument("--summary", required=True, help="Markdown summary to write")
    parser.add_argument("--html", required=True, help="the summary as one self-contained HTML file to write")
    parser.add_argument("--models", help="folder of the models, their cards and OOD scores (linked and summarised)")
    parser.add_argument(
        "--pixel-shortcut", help="the pixel shortcut's metrics (what it sees, the classifier val chose)"
    )
    args = parser.parse_args()
    write_report(load_params(), ReportPaths(**vars(args)))
    print(f"wrote {args.summary}, {args.html} and the figures in {args.figures}/")


if __name__ == "__main__":
    main()

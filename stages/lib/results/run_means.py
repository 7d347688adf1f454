"""A model that is the mean of several runs' probabilities (a backbone's seed ensemble, the ensemble of
every run), scored, fitted and probed from the runs' predictions as evaluate does for one model."""

from __future__ import annotations

from pathlib import Path

from stages.lib.params.schema import Evaluate, HideLungs
from stages.lib.results import external_scores as ext
from stages.lib.results import lungs_hidden, posthoc
from stages.lib.results.evaluation import mean_of_runs, score_mean, shown_split_of


def score_runs_mean(
    folders: list[Path], classes, out_dir: Path, e: Evaluate, external, hide: HideLungs | None
) -> tuple[dict, dict]:
    """The mean of the runs in `folders`: its predictions written to `out_dir` and scored, its own post-hoc fit
    on the mean of the runs' val probabilities (`fitted`, with its blocks), each external set, and with `hide`
    the shown split with the lungs hidden. Returns the report and each split's (labels, probabilities [runs, N, C])."""
    report, runs = score_mean(folders, classes, out_dir, e)
    report["fitted"], blocks = posthoc.fit_and_score({s: mean_of_runs(r) for s, r in runs.items()}, classes, e)
    report.update(blocks)
    report["external"] = ext.score_runs(folders, external, classes, report["fitted"], mean_of_runs(runs["test"]), e)
    if hide is not None:
        shown = shown_split_of(report)
        report[lungs_hidden.KEY] = lungs_hidden.of_runs(folders, shown, runs[shown], classes, e, hide)
    return report, runs

"""Film metadata: a manifest's extra columns are kept (malformed ones refused), and each subgroup is
scored with its n and CIs, flagged when its macro-F1 interval lies wholly below the overall score."""

import numpy as np
import pytest

from helpers import manifest_tree
from stages.lib.core.errors import UserError
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.layouts import read_layout
from stages.lib.report.posthoc_summary import subgroups_markdown
from stages.lib.results.subgroups import columns_to_score, subgroup_scores


def with_columns(root, header: str, cell) -> None:
    """manifest_tree's manifest.csv with `header` appended to its header and cell(i) to row i."""
    lines = (root / "manifest.csv").read_text().splitlines()
    rows = [lines[0] + header] + [line + cell(i) for i, line in enumerate(lines[1:])]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")


def test_extra_manifest_columns_are_film_metadata(tmp_path):
    data = manifest_tree(tmp_path / "data")
    with_columns(data, ",sex,source", lambda i: f",{'FM'[i % 2]},site{i // 8}")
    samples = [s for ss in read_layout(data, "manifest", STUDY_CLASSES).values() for s in ss]
    assert samples[0].metadata == (("sex", "F"), ("source", "site0"))
    assert [dict(s.metadata)["source"] for s in samples].count("site1") == 8


@pytest.mark.parametrize(
    "header,message",
    [
        (",", "column 4 has no name; name it or delete it"),
        (",sex,sex", "column 'sex' appears twice; keep one"),
        (",format", "column 'format' is a name the cache uses for every film; rename it (e.g. format_given)"),
    ],
)
def test_malformed_metadata_columns_are_refused_in_one_line(tmp_path, header, message):
    data = manifest_tree(tmp_path / "data")
    with_columns(data, header, lambda i: "," * header.count(","))
    with pytest.raises(UserError) as err:
        read_layout(data, "manifest", STUDY_CLASSES)
    assert str(err.value) == f"{data / 'manifest.csv'}: {message}"


def test_a_subgroup_column_the_films_lack_is_refused_naming_it():
    metadata = {"format": ["PNG"], "bit_depth": ["8"], "source": ["a"]}
    assert columns_to_score(metadata, ["source"], "cache/test.csv") == ["format", "bit_depth", "source"]
    with pytest.raises(UserError) as err:
        columns_to_score(metadata, ["sex"], "cache/test.csv")
    assert str(err.value).startswith(
        "evaluate.subgroups names column 'sex', which the films of cache/test.csv do "
        "not have (metadata columns: source)"
    )


def test_a_subgroup_wholly_below_the_overall_score_is_flagged():
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 60)  # 240 films, 60 a class
    site = np.where(np.arange(240) < 180, "good", "bad")
    probs = np.full((240, 4), 0.02)
    right = site == "good"
    probs[right, labels[right]] = 0.94  # the good site's films all right
    probs[~right, (labels[~right] + 1) % 4] = 0.94  # the bad site's films all wrong
    probs[rng.choice(180, 20, replace=False), 0] = 0.99  # a few mistakes at the good site too
    overall = 0.7
    table = subgroup_scores(labels, probs, {"source": list(site)}, ["source"], STUDY_CLASSES, overall, 200, 0)["source"]
    assert (table["good"]["n"], table["bad"]["n"]) == (180, 60)
    assert table["bad"]["macro_f1"] == 0 and table["bad"]["below_overall"]
    assert not table["good"]["below_overall"] and table["good"]["macro_f1_ci95"][1] >= overall
    text = "\n".join(subgroups_markdown({"m": {"split": "test", "overall_macro_f1": overall, "by": {"source": table}}}))
    assert "| bad | 60 | 0.000 [0.000, 0.000] **below** |" in text and "m on source = bad" in text

"""Film metadata: a manifest's extra columns are kept (malformed ones refused), and each subgroup is
scored with its n and CIs, flagged when its macro-F1 interval lies wholly below the overall score."""

import numpy as np
import pytest

from helpers import manifest_tree
from stages.lib.core.errors import UserError
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.layouts import read_layout
from stages.lib.report.cards import metric_rows
from stages.lib.report.summary_sections import subgroups_markdown
from stages.lib.results.subgroups import MIN_FILMS, columns_to_score, subgroup_scores


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


def test_a_subgroup_too_small_for_an_interval_has_none_and_is_never_flagged():
    """20 sites of one film each (on the old rule, a wrong film had the CI [0, 0] and was flagged), one of 9
    films and one of 10, every film there wrong: only the site of 10 (MIN_FILMS) gets an interval and a flag."""
    labels = np.tile(np.arange(4), 30)  # 120 films
    site = np.array(["big"] * 81 + ["nine"] * 9 + ["ten"] * 10 + [f"one{i}" for i in range(20)])
    probs = np.full((120, 4), 0.02)
    probs[np.arange(120), np.where(site == "big", labels, (labels + 1) % 4)] = 0.94  # wrong off the big site
    table = subgroup_scores(labels, probs, {"site": list(site)}, ["site"], STUDY_CLASSES, 0.9, 200, 0)["site"]
    for value in ["nine", *(f"one{i}" for i in range(20))]:
        g = table[value]
        assert g["n"] in (1, 9) and g["macro_f1"] == 0 and not g["below_overall"]
        assert g["accuracy_ci95"] is None and g["macro_f1_ci95"] is None and g["macro_auroc_ci95"] is None
        assert g["ci_note"] == "too few films for an interval (fewer than 10): none, and never flagged"
    assert MIN_FILMS == 10 and table["ten"]["macro_f1_ci95"] == [0, 0] and table["ten"]["below_overall"]
    text = "\n".join(subgroups_markdown({"m": {"split": "test", "overall_macro_f1": 0.9, "by": {"site": table}}}))
    assert "| one0 | 1 | 0.000 (too few films) |" in text and "| nine | 9 | 0.000 (too few films) |" in text
    assert "| ten | 10 | 0.000 [0.000, 0.000] **below** |" in text
    assert "> **Subgroups below the overall score:** m on site = ten." in text
    assert "one of fewer than 10 films has none (too few films) and is never flagged" in text
    card = "\n".join(metric_rows({"site": table}, "Subgroup"))  # the model card's table
    assert "| site: one0 | 1 | 0.000 (too few films) | 0.000 (too few films) | n/a (too few films) |" in card

"""External validation without a pipeline run: the external cache, refusals, absent classes, the drop, one
model scored on a set as evaluate, combine and ensemble score it."""

import numpy as np
import pytest

from helpers import data_params, manifest_tree, write_xray
from stages.external import SPLIT, build_external_cache
from stages.lib.core.errors import UserError
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.dataset import CachedSplit, verify_cache
from stages.lib.data.synthetic import make_external
from stages.lib.params.loader import load_params
from stages.lib.params.schema import Preprocess
from stages.lib.results import posthoc
from stages.lib.results.external_scores import drop, open_caches, restrict, score
from stages.lib.results.metrics import split_metrics

P = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)


def test_an_external_set_is_pooled_into_its_own_verified_cache(tmp_path):
    data = manifest_tree(tmp_path / "ext")  # train, val and test rows: all of it is external test data
    meta = build_external_cache(data, tmp_path / "cache_ext", P, data_params(), workers=1)
    assert verify_cache(tmp_path / "cache_ext") == meta
    films = CachedSplit(tmp_path / "cache_ext", SPLIT)
    assert len(films) == 16 and films[0][0].shape == (1, 32, 32)
    assert meta["counts"][SPLIT] == dict.fromkeys(STUDY_CLASSES, 4)


def test_the_shifted_demo_generator_has_no_covid_and_flatter_films(tmp_path):
    counts = make_external(tmp_path / "ext", 12, seed=0, workers=1)
    assert counts["COVID-19"] == 0 and sum(counts.values()) == 12
    meta = build_external_cache(tmp_path / "ext", tmp_path / "c", P, data_params(), workers=1)
    assert meta["layout"] == "manifest" and meta["synthetic"]


def test_an_external_folder_with_an_unknown_class_is_refused_naming_it(tmp_path):
    for i, folder in enumerate(["normal", "tuberculosis"]):
        write_xray(tmp_path / "ext" / "train" / folder / f"{i}.png", i)
    with pytest.raises(UserError) as err:
        build_external_cache(tmp_path / "ext", tmp_path / "c", P, data_params(), workers=1)
    assert str(err.value).startswith(
        f"{tmp_path / 'ext' / 'train' / 'tuberculosis'}: folder name 'tuberculosis' is not one of data.classes"
    )
    assert not (tmp_path / "c").exists()


def test_an_absent_class_is_reported_absent_not_zero():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(4)[[0, 1, 2, 0, 3, 2]] * 0.9 + 0.025
    m = split_metrics(labels, probs, STUDY_CLASSES, 50, 0, where="the external set")
    covid = m["per_class"]["COVID-19"]
    assert covid["absent"] and covid["support"] == 0 and covid["predicted_as"] == 1
    assert covid["recall"] is None and covid["f1"] is None and covid["note"] == "not in the external set"
    assert m["macro_f1"] == pytest.approx(np.mean([1, 2 / 3, 1]))  # over the three classes present


def test_the_drop_compares_the_same_classes_with_a_ci():
    rng = np.random.default_rng(0)
    yt = np.repeat(np.arange(4), 50)
    pt = np.eye(4)[yt] * 0.9 + 0.025  # internal test: all right
    ye = np.repeat(np.arange(3), 50)
    wrong = rng.random(150) < 0.4
    pe = np.eye(4)[np.where(wrong, (ye + 1) % 3, ye)] * 0.9 + 0.025  # external: 40% wrong, no COVID-19
    test = restrict(yt, pt, [0, 1, 2])
    assert len(test[0]) == 150
    d = drop(test, (ye, pe), 300, 0)
    assert d["test_macro_f1"] == 1.0 and d["drop"] == pytest.approx(1 - d["external_macro_f1"])
    assert 0 < d["drop_ci95"][0] <= d["drop"] <= d["drop_ci95"][1]


@pytest.mark.parametrize(
    "external,message",
    [
        ("{data: data}", "external data: 'data' must be a folder inside the project other than data/"),
        ("{'a b': ext}", "external names 'a b': use letters, digits"),
    ],
)
def test_bad_external_params_are_refused_naming_them(tmp_path, external, message):
    from helpers import ROOT

    text = (ROOT / "params.yaml").read_text().replace("external: {}", f"external: {external}")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError) as err:
        load_params(tmp_path / "params.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_set_not_preprocessed_or_preprocessed_otherwise_is_refused_before_scoring(tmp_path):
    with pytest.raises(UserError) as err:
        open_caches(tmp_path, ["kaggle"], {"preprocess": P.model_dump(), "classes": list(STUDY_CLASSES)})
    assert str(err.value) == (
        f"{tmp_path / 'kaggle'} not found: the external set 'kaggle' (params.yaml `external`) is "
        "not preprocessed yet; run dvc repro external@kaggle"
    )
    meta = build_external_cache(manifest_tree(tmp_path / "ext"), tmp_path / "kaggle", P, data_params(), workers=1)
    assert open_caches(tmp_path, ["kaggle"], meta) == {"kaggle": (tmp_path / "kaggle", SPLIT)}
    other = {"preprocess": {**P.model_dump(), "img_size": 64}, "classes": list(STUDY_CLASSES)}
    with pytest.raises(UserError) as err:
        open_caches(tmp_path, ["kaggle"], other)
    assert "preprocessed with" in str(err.value) and str(err.value).endswith("rerun dvc repro external@kaggle")


def test_a_model_on_an_external_set_gets_test_s_numbers_absent_classes_and_the_drop():
    rng = np.random.default_rng(1)
    e = load_params().evaluate.model_copy(update={"bootstrap_resamples": 200})
    yv = np.repeat(np.arange(4), 30)
    pv = np.clip(np.eye(4)[yv] * 0.7 + rng.random((120, 4)) * 0.3, 1e-3, None)
    fitted = posthoc.fit(yv, pv / pv.sum(1, keepdims=True), STUDY_CLASSES, e)
    ye = np.repeat(np.arange(3), 20)  # no COVID-19
    pe = np.clip(np.eye(4)[ye] * 0.5 + rng.random((60, 4)) * 0.5, 1e-3, None)
    pe /= pe.sum(1, keepdims=True)
    m = score(ye, pe, STUDY_CLASSES, fitted, (yv, pv / pv.sum(1, keepdims=True)), e)
    assert m["n"] == 60 and m["counts"] == {"normal": 20, "bacteria": 20, "virus": 20, "COVID-19": 0}
    assert m["absent_classes"] == ["COVID-19"] and m["per_class"]["COVID-19"]["absent"]
    assert m["macro_f1_ci95"][0] <= m["macro_f1"] <= m["macro_f1_ci95"][1]
    assert m["drop"]["external_macro_f1"] == m["macro_f1"]  # both over the classes present
    assert m["drop"]["drop_ci95"][0] <= m["drop"]["drop"] <= m["drop"]["drop_ci95"][1]
    assert set(m["temperature"]["ece"]) >= {"before", "after", "after_ci95"} and "coverage_ci95" in m["coverage"]
    hidden = score(ye, pe, STUDY_CLASSES, fitted, (np.full(5, -1), pv[:5]), e)
    assert hidden["drop"] is None and hidden["macro_f1"] == m["macro_f1"]  # test labels hidden: no drop

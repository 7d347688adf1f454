"""Post-hoc fits on val (temperature, conformal sets, operating points): worked examples, the
guarantees a user relies on (coverage near 1 - alpha, val NLL never raised), and the blocks' shape."""

import numpy as np
import pytest

from helpers import demo_like
from stages.lib.params.schema import Evaluate
from stages.lib.results import posthoc
from stages.lib.results.metrics import expected_calibration_error

CLASSES = ["normal", "bacteria", "virus", "COVID-19"]
E = Evaluate(bootstrap_resamples=300, seed=0, calibration_bins=10)


def test_lac_threshold_on_a_worked_example():
    # 9 val images whose true class got 0.9, 0.8, ..., 0.1: scores 0.1 ... 0.9. alpha 0.25:
    # ceil((9 + 1) * 0.75) = 8 -> the 8th smallest score, 0.8 (the naive rank ceil(9 * 0.75) = 7 gives 0.7).
    p_true = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    probs = np.column_stack([p_true, 1 - p_true, np.zeros(9), np.zeros(9)])
    fitted = posthoc.fit_conformal_threshold(np.zeros(9, int), probs, 0.25)
    assert fitted == {"threshold": pytest.approx(0.8), "note": None}
    # a class is in the set when its probability is at least 1 - 0.8 = 0.2
    sets = posthoc.prediction_sets(
        np.array([[0.5, 0.3, 0.15, 0.05], [0.19, 0.81, 0, 0], [0.2, 0.2, 0.2, 0.4]]), fitted["threshold"]
    )
    assert posthoc.set_names(sets, CLASSES) == ["normal|bacteria", "bacteria", "normal|bacteria|virus|COVID-19"]


def test_too_small_a_val_for_alpha_gives_every_class():
    fitted = posthoc.fit_conformal_threshold(np.zeros(5, int), np.full((5, 4), 0.25), 0.1)  # ceil(6 * 0.9) = 6 > 5
    assert fitted["threshold"] == 1.0 and "too few" in fitted["note"]
    assert posthoc.prediction_sets(np.array([[1.0, 0, 0, 0]]), 1.0).all()


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_test_coverage_ci_contains_one_minus_alpha_on_demo_like_data(alpha):
    val, test = demo_like(1000, 5), demo_like(1500, 6)  # one draw: holds in ~95% of draws
    fitted = posthoc.fit(*val, CLASSES, E.model_copy(update={"alpha": alpha}))
    cov = posthoc.score(fitted, *test, E)["coverage"]
    low, high = cov["coverage_ci95"]
    assert low <= 1 - alpha <= high and low <= cov["coverage"] <= high
    assert 1 <= cov["mean_set_size"] < 4  # informative: not every class every time
    assert sum(c["n"] for c in cov["per_class"].values()) == 1500


def test_coverage_averaged_over_many_val_draws_is_one_minus_alpha():
    """The guarantee is on average over val draws: 1 - alpha <= E[coverage] < 1 - alpha + 1 / (n + 1). On 20
    val films the rank matters: ceil(21 * 0.9) = 19 gives E = 19/21 = 0.905, the naive ceil(20 * 0.9) = 18 gives
    18/21 = 0.857; 1000 draws put the mean within 0.006 (3 sd) of E."""
    covered = []
    for seed in range(1000):
        (yv, pv), (yt, pt) = demo_like(20, 10_000 + seed), demo_like(300, 20_000 + seed)
        _, sets, _ = posthoc.apply(posthoc.fit(yv, pv, CLASSES, E), pt)
        covered.append(sets[np.arange(len(yt)), yt].mean())
    assert 0.9 - 0.006 <= np.mean(covered) <= 0.9 + 1 / 21


def test_per_class_coverage_reports_an_absent_class_as_absent():
    labels = np.array([0, 0, 1, 1])
    sets = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], bool)
    cov = posthoc.coverage_scores(labels, sets, CLASSES, 50, 0)
    assert cov["coverage"] == 0.75 and cov["mean_set_size"] == 1.25
    assert cov["per_class"]["normal"]["coverage"] == 0.5 and cov["per_class"]["bacteria"]["coverage"] == 1.0
    assert cov["per_class"]["virus"] == {"n": 0, "absent": True}


@pytest.mark.parametrize("sharpness,seed", [(3.0, 0), (0.4, 1), (1.0, 2), (1.0, 3)])
def test_temperature_never_raises_val_nll_and_undoes_over_or_under_confidence(sharpness, seed):
    labels, probs = demo_like(300, seed, sharpness)
    t = posthoc.fit_temperature(labels, probs)
    after = posthoc.apply_temperature(probs, t["value"])
    assert posthoc.nll(labels, after) <= posthoc.nll(labels, probs) + 1e-12
    assert t["val_nll_after"] == pytest.approx(posthoc.nll(labels, after))
    if sharpness != 1.0:  # the fitted T undoes the scaling of the logits, roughly
        assert t["value"] == pytest.approx(sharpness, rel=0.35)
    np.testing.assert_allclose(after.sum(1), 1)


def test_temperature_falls_back_to_one_when_nothing_lowers_the_nll():
    t = posthoc.fit_temperature(np.array([0, 1]), np.full((2, 4), 0.25))  # uniform: every T gives log 4
    assert t["value"] == 1.0 and t["note"].startswith("no temperature lowers")


def test_temperature_on_logits_equals_softmax_of_scaled_logits():
    logits = np.array([[2.0, 0.5, -1.0, 0.0]])
    p = np.exp(logits) / np.exp(logits).sum()
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum()
    np.testing.assert_allclose(posthoc.apply_temperature(p, 2.0), expected)


def test_batched_ece_and_brier_match_their_definitions():
    labels, probs = demo_like(200, 4)
    assert posthoc.ece(labels, probs, 10) == pytest.approx(expected_calibration_error(labels, probs, 10)[0])
    onehot = np.eye(4)[labels]
    assert posthoc.brier(labels, probs) == pytest.approx(((probs - onehot) ** 2).sum(1).mean())


def test_operating_point_on_a_worked_example():
    # 5 val COVID-19 films scored 0.9 ... 0.5; target 0.8: ceil(0.8 * 5) = 4th highest, 0.6.
    labels = np.array([3, 3, 3, 3, 3, 0, 0])
    probs = np.zeros((7, 4))
    probs[:, 3] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.65, 0.1]
    probs[:, 0] = 1 - probs[:, 3]
    assert posthoc.fit_operating_threshold(labels, probs, 3, 0.8) == {"threshold": 0.6, "note": None}
    s = posthoc.operating_scores(labels, probs, 3, 0.6, 100, 0)
    assert (s["sensitivity"], s["specificity"], s["n_positive"], s["n_negative"]) == (0.8, 0.5, 5, 2)
    assert s["sensitivity_ci95"][0] <= 0.8 <= s["sensitivity_ci95"][1]
    assert posthoc.fit_operating_threshold(labels, probs, 1, 0.9)["threshold"] is None  # no bacteria in val


def test_blocks_have_the_names_a_reader_looks_for():
    e = E.model_copy(update={"target_sensitivity": {"COVID-19": 0.9}})
    outputs = {"val": demo_like(200, 5), "test": demo_like(200, 6)}
    fitted, out = posthoc.fit_and_score(outputs, CLASSES, e)
    assert set(out) == {"temperature", "coverage", "operating_points"}
    assert "test" in out["coverage"] and "val" not in out["coverage"]  # val coverage is in-sample
    assert set(out["coverage"]["test"]["per_class"]) == set(CLASSES)
    for key in ("nll", "brier", "ece"):
        block = out["temperature"]["val"][key]
        assert block["after_ci95"][0] <= block["after"] <= block["after_ci95"][1]
    assert out["temperature"]["val"]["nll"]["after"] <= out["temperature"]["val"]["nll"]["before"]
    point = out["operating_points"]["COVID-19"]
    assert (
        point["val"]["sensitivity"] >= 0.9 and point["threshold"] == fitted["operating_points"]["COVID-19"]["threshold"]
    )


# --- fits that val cannot support are not applied, and every place that shows them says why ---------


def confidently_wrong(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Two films a class, each given 0.9 on the next class: the NLL falls all the way to uniform."""
    labels = np.repeat(np.arange(4), n_per_class)
    probs = np.full((len(labels), 4), 0.1 / 3)
    probs[np.arange(len(labels)), (labels + 1) % 4] = 0.9
    return labels, probs


def test_a_temperature_fit_ending_at_the_search_limit_is_not_applied():
    labels, probs = confidently_wrong(2)  # 8 films: without the rule T = 19.9999
    t = posthoc.fit_temperature(labels, probs)
    assert t["value"] == 1.0 and t["val_nll_after"] == t["val_nll_before"]
    assert t["note"].startswith("not applied: the fit ran to the search limit (T = 20, bounds 0.05 to 20)")
    right = np.eye(4)[labels] * 0.7 + 0.075  # every film right: the NLL falls all the way to T = 0.05
    assert posthoc.fit_temperature(labels, right)["note"].startswith("not applied: the fit ran to the search")


@pytest.mark.parametrize(
    "labels, why",
    [
        (np.arange(12) % 4, "val has 12 labelled films, fewer than the 20 a fit needs"),
        (np.zeros(30, int), "every val film is normal: one class cannot fit it"),
    ],
)
def test_too_few_val_films_or_classes_fit_no_temperature_and_no_prediction_set_threshold(labels, why):
    _, probs = demo_like(len(labels), 7, sharpness=3.0)  # overconfident: a fit would pick T near 3
    fitted = posthoc.fit(labels, probs, CLASSES, E)
    assert fitted["temperature"]["value"] == 1.0
    assert fitted["temperature"]["note"] == f"not applied: {why}; T = 1, probabilities unchanged"
    assert fitted["conformal_threshold"] == 1.0
    assert fitted["conformal_note"] == f"not applied: {why}; every set holds every class"
    scaled, sets, _ = posthoc.apply(fitted, probs)
    assert (scaled == probs).all() and sets.all()
    assert posthoc.describe(fitted, "m.calibration.json") == (
        f"nothing from m.calibration.json; temperature: not applied: {why}; T = 1, probabilities unchanged; "
        f"prediction sets: not applied: {why}; every set holds every class"
    )


def test_a_val_like_the_demos_is_fitted_and_applied():
    """The demo's val: 90 films of 4 classes (7 COVID-19); an overconfident model gets its temperature."""
    labels, probs = demo_like(90, 8, sharpness=2.0)
    fitted = posthoc.fit(labels, probs, CLASSES, E)
    assert fitted["temperature"]["note"] is None and 1.3 < fitted["temperature"]["value"] < 3.5
    assert fitted["conformal_note"] is None and fitted["conformal_threshold"] < 1.0
    assert posthoc.describe(fitted, "m.calibration.json") == "temperature, prediction sets from m.calibration.json"


def test_the_summary_and_the_card_say_why_a_fit_is_not_applied():
    from stages.lib.report.cards import posthoc_lines
    from stages.lib.report.summary_sections import posthoc_markdown

    outputs = {"val": (np.arange(12) % 4, demo_like(12, 7)[1]), "test": demo_like(60, 6)}
    _, blocks = posthoc.fit_and_score(outputs, CLASSES, E)
    why = "val has 12 labelled films, fewer than the 20 a fit needs"
    text = "\n".join(posthoc_markdown({"m": blocks}, "test"))
    assert "| m | 1.00* | " in text and f"- \\* T of m: not applied: {why}; T = 1, probabilities unchanged." in text
    assert f"- Prediction sets of m: not applied: {why}; every set holds every class." in text
    card = "\n".join(posthoc_lines(blocks, "test"))
    assert f"T = 1.000 fitted on val (not applied: {why}; T = 1, probabilities unchanged); test before" in card
    assert f"({blocks['coverage']['note']})." in card


def test_wherever_coverage_is_shown_it_says_val_also_chose_the_checkpoint():
    """The guarantee assumes val is new to the model; val also picked the checkpoint and fitted the temperature.
    The metrics file's coverage block, the summary's coverage table and the model card each say so."""
    from stages.lib.report.cards import posthoc_lines
    from stages.lib.report.summary_sections import coverage_table

    _, out = posthoc.fit_and_score({"val": demo_like(200, 5), "test": demo_like(200, 6)}, CLASSES, E)
    assert out["coverage"]["val_use"] == posthoc.VAL_USE and "chose the checkpoint" in posthoc.VAL_USE
    assert f"Note: {posthoc.VAL_USE}." in coverage_table({"resnet18": out}, "test")[1]
    card = "\n".join(posthoc_lines(out, "test"))
    assert "test coverage " in card and f"Note: {posthoc.VAL_USE}." in card

"""The pixel shortcut (stages/lib/audit/pixel_shortcut.py) and the lungs-hidden scores
(stages/lib/results/lungs_hidden.py): what a classifier can read outside the lungs box, and nothing inside it."""

import numpy as np
import pytest

from stages.lib.audit import pixel_shortcut as px
from stages.lib.audit.shortcut import macro_f1
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.params.schema import Evaluate, HideLungs, PixelShortcut
from stages.lib.results import lungs_hidden
from stages.pixel_shortcut import external_metrics

H = HideLungs()  # 5% in from each edge
P = PixelShortcut(C=[0.1, 1.0], boosting=True)
SIZE = 64


def films(labels: np.ndarray, where: str, seed: int) -> np.ndarray:
    """Noisy films whose class is written only `where`: "outside" the box (a bright patch in the top rim whose
    position is the class) or "inside" it (the same patch in the middle of the film)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(60, 120, (len(labels), SIZE, SIZE), dtype=np.uint8)
    for i, y in enumerate(labels):
        x = 6 + 14 * int(y)
        rows = slice(0, 3) if where == "outside" else slice(30, 36)
        out[i, rows, x : x + 8] = 250
    return out


def fit(where: str) -> float:
    """Test macro-F1 of the pixel shortcut fitted on train and chosen on val, all films drawn alike."""
    y = {s: np.arange(n) % 4 for s, n in (("train", 80), ("val", 40), ("test", 40))}
    x = {s: px.features(films(y[s], where, seed), H, P) for seed, s in enumerate(y)}
    _, model, tried = px.fit_and_choose((x["train"], y["train"]), (x["val"], y["val"]), P)
    assert set(tried) == {"logistic regression, C=0.1", "logistic regression, C=1", "gradient-boosted trees"}
    return macro_f1(y["test"], px.probabilities(model, x["test"], 4).argmax(1))


def test_the_pixel_shortcut_finds_a_class_written_outside_the_lungs():
    assert fit("outside") == 1.0


def test_the_pixel_shortcut_cannot_see_a_class_written_inside_the_lungs():
    assert fit("inside") < 0.5  # chance is 0.25: the patch lies under the box


def test_an_external_set_without_a_class_is_scored_with_that_class_absent_not_zero():
    """The demo's external set has no COVID-19 film: its entry says so (no F1, how many films were called it)."""
    labels = np.arange(30) % 3
    probs = np.full((30, 4), 0.1)
    probs[np.arange(30), (labels + (np.arange(30) % 10 == 0)) % 4] = 0.7  # three films called the next class
    m = external_metrics((labels, probs), list(STUDY_CLASSES), Evaluate(bootstrap_resamples=20))
    covid = m["per_class"]["COVID-19"]
    assert m["absent_classes"] == ["COVID-19"] and m["n"] == 30
    assert covid["absent"] and covid["f1"] is None and covid["recall"] is None and covid["predicted_as"] == 1
    assert m["per_class"]["normal"]["recall"] == pytest.approx(9 / 10)


def test_no_pixel_inside_the_box_reaches_the_features():
    a = films(np.zeros(4, int), "outside", 0)
    b = a.copy()
    b[:, 4:60, 4:60] = np.random.default_rng(1).integers(0, 256, (4, 56, 56))  # anything under the box
    assert np.array_equal(px.features(a, H, P), px.features(b, H, P))
    c = a.copy()
    c[:, 0, 30] = 0  # one rim pixel changed
    assert not np.array_equal(px.features(a, H, P), px.features(c, H, P))


def one_hot(predicted: np.ndarray) -> np.ndarray:
    return np.eye(4)[predicted]


def test_a_class_kept_with_the_lungs_hidden_is_read_from_outside_them():
    classes = ["normal", "bacteria", "virus", "COVID-19"]
    y = np.repeat(np.arange(4), 10)
    normal = one_hot(y)  # every film right with the lungs
    # lungs hidden: COVID-19 still found (9 of 10), the rest called normal, except one bacteria film
    hidden = np.zeros_like(y)
    hidden[y == 3] = 3
    hidden[30] = 0
    hidden[10] = 1
    b = lungs_hidden.block("test", y, normal, one_hot(hidden), classes, Evaluate(bootstrap_resamples=200), H)
    covid, rest = b["per_class"]["COVID-19"], b["per_class"]
    assert covid["recall"] == 0.9 and covid["kept"] == pytest.approx(0.9) and covid["read_outside_lungs"]
    # normal keeps all its recall only because most hidden films are called normal: its margin over the other
    # classes' films called it (1 - 20/30) is a third of what it was (1 - 0): not read from outside
    assert rest["normal"]["kept"] == 1.0 and rest["normal"]["margin_kept"] == pytest.approx(1 / 3)
    assert b["read_outside_lungs"] == ["COVID-19"] and not rest["bacteria"]["read_outside_lungs"]  # 10% kept
    assert b["macro_f1_with_lungs"] == 1.0 and b["cost"]["difference"] == pytest.approx(1 - b["macro_f1"])
    low, high = b["macro_f1_ci95"]
    assert low <= b["macro_f1"] <= high and b["cost"]["ci95"][0] > 0  # hiding the lungs costs, surely


def test_keeping_just_under_half_of_the_recall_is_not_most():
    classes = ["a", "b", "c"]
    y = np.repeat([0, 1, 2], 20)
    hidden = y.copy()
    hidden[20:31] = 2  # b: 9 of 20 kept, 45% < KEEP; c called for 11 films of b: margin 1 - 11/40 kept
    e = Evaluate(bootstrap_resamples=0)
    b = lungs_hidden.block("test", y, one_hot(y)[:, :3], one_hot(hidden)[:, :3], classes, e, H)
    assert b["per_class"]["b"]["kept"] == pytest.approx(0.45) and b["read_outside_lungs"] == ["a", "c"]
    assert b["per_class"]["c"]["margin_kept"] == pytest.approx(1 - 11 / 40)
    assert lungs_hidden.KEEP == 0.5


def test_the_card_says_in_words_which_class_is_read_from_outside_the_lungs():
    from stages.lib.report.cards import lungs_hidden_lines, shortcut_lines
    from stages.lib.results.metrics import split_metrics

    classes = ["normal", "bacteria", "virus", "COVID-19"]
    y = np.repeat(np.arange(4), 10)
    hidden = np.zeros_like(y)
    hidden[y == 3] = 3
    hidden[30] = 0
    e = Evaluate(bootstrap_resamples=200)
    b = lungs_hidden.block("test", y, one_hot(y), one_hot(hidden), classes, e, H)
    scored = split_metrics(y, one_hot(y), classes, 200, 0)
    text = "\n".join(lungs_hidden_lines(b, scored))
    assert (
        "**COVID-19 keeps 90% of its recall with the lungs hidden: this model reads that class from outside the lungs.**"
        in text
    )
    assert "rows 5%-95% and columns 5%-95% of the film set to grey level 0" in text
    assert "| COVID-19 | 1.000 | 0.900 | 90% | 0% -> 0% | 90% |" in text
    assert "| normal | 1.000 | 1.000 | 100% | 0% -> 70% | 30% |" in text  # most hidden films called normal
    b["read_outside_lungs"] = []
    assert "No class keeps at least 50% of its recall and of its margin" in "\n".join(lungs_hidden_lines(b, scored))
    # the card's shortcut audit judges the model against the stronger shortcut, by name
    shortcuts = {"shortcut": {"test": {"macro_f1": 0.4}}, "pixel_shortcut": {"test": {"macro_f1": 1.0}}}
    audit = "\n".join(shortcut_lines({"test": scored}, shortcuts, "test"))
    assert "Against the stronger of the two (pixel_shortcut) it does NOT clearly beat it" in audit
    assert "rather than from the lungs" in audit and "what lies outside the lungs" in audit


def test_a_model_that_calls_every_hidden_film_one_class_is_said_to_tell_nothing():
    from stages.lib.report.phrases import read_outside_words

    classes = ["normal", "bacteria", "virus", "COVID-19"]
    y = np.repeat(np.arange(4), 5)
    b = lungs_hidden.block(
        "test", y, one_hot(y), one_hot(np.full_like(y, 3)), classes, Evaluate(bootstrap_resamples=0), H
    )
    assert b["read_outside_lungs"] == [] and b["per_class"]["COVID-19"]["kept"] == 1.0
    said = read_outside_words(b)
    assert said.startswith("With the lungs hidden this model calls every film COVID-19, so no class keeps")
    assert "cannot say what it reads from the rest" in said

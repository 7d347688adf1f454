import numpy as np
import pytest
from sklearn.metrics import classification_report

from stages.lib.data import CLASSES
from stages.lib.metrics import classification_metrics, confusion, macro_f1

Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 1, 2, 1, 3])


def test_contract_keys_and_types():
    m = classification_metrics(Y_TRUE, Y_PRED)
    assert set(m) == {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class"}
    assert list(m["per_class"]) == list(CLASSES)
    for per in m["per_class"].values():
        assert set(per) == {"precision", "recall", "f1", "support"} and isinstance(per["support"], int)


def test_values_match_sklearn_report():
    m = classification_metrics(Y_TRUE, Y_PRED)
    ref = classification_report(Y_TRUE, Y_PRED, target_names=CLASSES, output_dict=True, zero_division=0)
    assert m["accuracy"] == pytest.approx(ref["accuracy"]) == pytest.approx(0.7)
    assert m["macro_f1"] == pytest.approx(ref["macro avg"]["f1-score"])
    assert m["macro_precision"] == pytest.approx(ref["macro avg"]["precision"])
    assert m["macro_recall"] == pytest.approx(ref["macro avg"]["recall"])
    for name in CLASSES:
        assert m["per_class"][name]["f1"] == pytest.approx(ref[name]["f1-score"])
        assert m["per_class"][name]["support"] == ref[name]["support"]
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(m["macro_f1"])


def test_class_absent_from_split_does_not_drag_macro_average():
    y_true, y_pred = np.array([0, 1, 2, 0]), np.array([0, 1, 2, 0])
    m = classification_metrics(y_true, y_pred)
    assert m["macro_f1"] == 1.0 and m["per_class"]["COVID-19"]["support"] == 0
    assert macro_f1(y_true, y_pred) == 1.0


def test_confusion_rows_are_true_classes():
    cm = confusion(Y_TRUE, Y_PRED)
    assert cm.shape == (4, 4) and cm.sum() == len(Y_TRUE)
    assert cm[1, 2] == 1 and cm[2, 1] == 1 and cm.trace() == 7

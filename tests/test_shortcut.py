"""The shortcut audit's forest: its memory stays bounded as the train split grows (the road to 100k)."""

import numpy as np

from stages.lib.audit import shortcut


def nodes(n: int, seed: int = 0) -> int:
    rng = np.random.default_rng(
        seed
    )  # near-unique file sizes and labels they cannot explain: trees grow to one image a leaf
    x = np.c_[rng.integers(10**5, 4 * 10**5, n), rng.integers(700, 1500, (n, 2))].astype(float)
    return sum(t.tree_.node_count for t in shortcut.fit_forest(x, rng.integers(0, 4, n).tolist(), seed).estimators_)


def test_the_forest_stops_growing_past_the_cap(monkeypatch):
    monkeypatch.setattr(shortcut, "MAX_SAMPLES_PER_TREE", 300)
    past_cap, four_times = nodes(1200), nodes(4800)
    assert four_times < 1.2 * past_cap, (past_cap, four_times)
    monkeypatch.setattr(shortcut, "MAX_SAMPLES_PER_TREE", 10**6)
    assert nodes(1200) > 3 * nodes(300)  # uncapped, the forest grows with the split: what the cap saves

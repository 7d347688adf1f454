"""Names shared across rooms, each declared once beside its meaning: the classes and splits, how a label
is compared and named, the models beside the backbones, and where one seed's run lives.

Imported wherever they are used, so no module imports another only for a constant.
"""

from __future__ import annotations

import re
from pathlib import Path

STUDY_CLASSES = ("normal", "bacteria", "virus", "COVID-19")
SPLITS = ("train", "val", "test")
SCORED_SPLITS = ("val", "test")  # train is never scored after training
# A hidden-label film has an empty label in <split>.csv, this label index in memory ...
UNLABELED = -1
# ... and this class name in the data report's counts.
UNLABELED_CLASS = "unlabeled"
# Spellings seen in public datasets; compared after lower-casing and dropping '-', '_' and spaces.
LABEL_ALIASES = {"bacterial": "bacteria", "viral": "virus", "covid": "covid19"}
# The models beside the backbones in comparisons: the mean of every run's probabilities, the
# metadata-only classifier of the data report (predictions/shortcut/), and the classifier that sees only
# the film outside the lungs (stage pixel_shortcut: predictions/pixel_shortcut/).
ENSEMBLE = "ensemble"
SHORTCUT = "shortcut"
PIXEL_SHORTCUT = "pixel_shortcut"
SHORTCUTS = (SHORTCUT, PIXEL_SHORTCUT)
# The file the demo generator (data/synthetic.py) leaves in each data folder it writes; the cache's
# meta.json says `synthetic` when it is there (data/cache_writer.py), and the report and cards say so.
SYNTHETIC_MARKER = "SYNTHETIC"


def label_key(text: str) -> str:
    """How a label is compared (data.classes' names with each other, a file's label with them): 'COVID-19',
    'covid' and 'Covid_19' are one class."""
    key = re.sub(r"[-_\s]", "", text.strip().lower())
    return LABEL_ALIASES.get(key, key)


def class_name(label: int | None, classes) -> str:
    """A label index's class name; a hidden label's is UNLABELED_CLASS."""
    return UNLABELED_CLASS if label is None else classes[label]


def run_name(backbone: str, seed: int) -> str:
    """One run's name, `<backbone>/seed<seed>`: its label in comparisons and its path stem under models/,
    dvclive/, metrics/ and plots/gradcam/ (dvc.yaml's train and evaluate outs)."""
    return f"{backbone}/seed{seed}"


def seed_run(folder: str | Path, seed: int) -> Path:
    """One seed's predictions folder under a backbone's: `<folder>/seeds/seed<seed>` (dvc.yaml's evaluate outs)."""
    return Path(folder) / "seeds" / f"seed{seed}"

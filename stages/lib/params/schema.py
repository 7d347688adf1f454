"""Every param of params.yaml, declared once: type, default (the study's), allowed values, meaning.

`stages.lib.params.loader.load_params` checks params.yaml against `Config` before any work starts
(stages/lib/params/messages.py words what it refuses), and stages read `cfg.train.lr`. Validation
is strict: a quoted "0.1" or "false" is refused, never converted, and every key must be present (a
default used silently would be a value DVC does not track). The sections are declared in
data_sections.py, run_sections.py and shortcut_sections.py, on base.py's strict model; Config, here, holds them all. docs/params.md is generated from the descriptions here (`python -m tools.params_docs docs/params.md`).
"""

from __future__ import annotations

import re
from typing import Union

from pydantic import Field, field_validator, model_validator

from stages.lib.core.backbones import BACKBONES, REGISTRY, study_backbones
from stages.lib.params.base import Section, allows, refuse, source_of

# Every section is imported from here (`from stages.lib.params.schema import Train`), wherever it is declared.
from stages.lib.params.data_sections import Assemble, Augment, Data, Preprocess, Synthetic
from stages.lib.params.run_sections import Evaluate, Plateau, Train  # noqa: F401 (Plateau: re-exported)
from stages.lib.params.shortcut_sections import HideLungs, PixelShortcut

OPTIONAL_SECTIONS = {"synthetic", "assemble"}  # may be absent: synthetic is demo/params.yaml's, assemble the top's


class Config(Section):
    """params.yaml. `backbones` sits outside `train` so the train stage can depend on `train` whole."""

    preprocess: Preprocess = Field(default_factory=Preprocess, description="run once per image")
    data: Data = Field(default_factory=Data, description="reading data/")
    augment: Augment = Field(default_factory=Augment, description="train-time augmentation")
    backbones: list[str] = Field(
        default_factory=study_backbones,
        json_schema_extra=allows(f"distinct names, each with a record in {REGISTRY}", **source_of("report")),
        description="the networks trained and compared; dvc.yaml loops over them",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42],
        json_schema_extra=allows("distinct integers from 0 to 2**32 - 1", **source_of("ours")),
        description="one training run per backbone and seed (dvc.yaml's matrix); the report gives their spread and "
        "scores each backbone's seed ensemble",
    )
    train: Train = Field(default_factory=Train, description="training")
    evaluate: Evaluate = Field(default_factory=Evaluate, description="scoring")
    hide_lungs: HideLungs = Field(
        default_factory=HideLungs,
        description="the central box hidden to see what a classifier reads outside the lungs (docs/shortcuts.md)",
    )
    pixel_shortcut: PixelShortcut = Field(
        default_factory=PixelShortcut, description="the classifier that sees only the film outside that box"
    )
    synthetic: Union[Synthetic, None] = Field(
        None, description="demo/params.yaml only: the synthetic films its first stage writes"
    )
    assemble: Union[Assemble, None] = Field(
        None, description="params.yaml only: the study's data assembled from its public sources"
    )
    external: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra=allows(
            "a mapping of names (letters, digits, - _ .) to DVC-tracked folders relative to "
            "the project, other than data; {} for none",
            **source_of("ours"),
        ),
        description="external labelled datasets, each in any layout preprocess reads: preprocessed alike and scored "
        "by every model (dvc.yaml's external@<name>; docs/calibration.md)",
    )

    @field_validator("external")
    @classmethod
    def _external_sets(cls, sets: dict[str, str]) -> dict[str, str]:
        for name, folder in sets.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise refuse(
                    f"names {name!r}: use letters, digits, '-', '_' or '.' (it names the stage and its files)",
                    show_value=False,
                )
            parts = folder.replace("\\", "/").strip("/").split("/")
            if folder.startswith("/") or ".." in parts or parts[0] in ("", "data", "cache", "models"):
                raise refuse(
                    f"{name}: {folder!r} must be a folder inside the project other than data/ (and not "
                    "cache/ or models/), e.g. data_external/" + name,
                    show_value=False,
                )
        return sets

    @model_validator(mode="after")
    def _known_classes(self) -> Config:
        unknown = [c for c in self.evaluate.target_sensitivity if c not in self.data.classes]
        if unknown:
            raise refuse(
                f"evaluate.target_sensitivity names {unknown[0]!r}, not in data.classes "
                f"{self.data.classes}; use one of those names",
                show_value=False,
            )
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) < len(seeds) or not all(0 <= x < 2**32 for x in seeds):
            raise refuse("must be a non-empty list of distinct integers from 0 to 2**32 - 1")
        return seeds

    @field_validator("backbones")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in BACKBONES]
        if unknown:
            raise refuse(
                f"lists {unknown[0]!r}, which has no record in {REGISTRY} (records: "
                f"{', '.join(BACKBONES)}); add its record there or remove the name",
                show_value=False,
            )
        if not names or len(set(names)) < len(names):
            raise refuse("must be a non-empty list of distinct names")
        return names

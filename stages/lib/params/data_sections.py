"""The params sections about the films: preprocess, data, augment, and the demo's synthetic and the study's assemble."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator

from stages.lib.core.names import STUDY_CLASSES, label_key
from stages.lib.params.base import Section, allows, refuse, source_of


class Preprocess(Section):
    img_size: int = Field(
        256,
        ge=32,
        le=1024,
        json_schema_extra=source_of("report"),
        description="final square size fed to the networks (px)",
    )
    center_crop_ratio: float = Field(
        0.9,
        gt=0,
        le=1,
        json_schema_extra=source_of("report", code=0.95),
        description="share of the short side kept by the centre crop",
    )
    clahe_clip_limit: float = Field(
        1.5, gt=0, le=40, json_schema_extra=source_of("report"), description="CLAHE clip limit (fixed, not sampled)"
    )
    clahe_tile_grid: int = Field(
        8, ge=1, le=64, json_schema_extra=source_of("report"), description="CLAHE tiles per side (8 -> 8x8)"
    )


class Data(Section):
    # A str, not a Literal of the names: the layouts are declared once, in stages/lib/data/layouts.py (LAYOUTS),
    # a room above params, which checks data.layout when preprocess starts (docs/params.md lists them).
    layout: str = Field(
        "auto",
        json_schema_extra=allows("auto or the name of a layout in stages/lib/data/layouts.py", **source_of("ours")),
        description="dataset layout under data/; auto detects it (README 'Bring your own data')",
    )
    classes: list[str] = Field(
        default_factory=lambda: list(STUDY_CLASSES),
        json_schema_extra=allows("two or more distinct names", **source_of("report")),
        description="the label set, in output order; other labels are refused (Kaggle: [normal, bacteria, virus] "
        "or [normal, pneumonia])",
    )
    val_fraction: float = Field(
        0.15,
        gt=0,
        le=0.5,
        json_schema_extra=source_of("ours"),
        description="share of train held out as val when val is missing or too small",
    )
    min_val: int = Field(
        20,
        ge=0,
        json_schema_extra=source_of("ours"),
        description="a smaller given val split is merged into train and re-split",
    )
    test_fraction: float = Field(
        0.15,
        gt=0,
        le=0.5,
        json_schema_extra=source_of("ours"),
        description="share of train held out as test when the layout has none",
    )
    seed: int = Field(
        42,
        ge=0,
        lt=2**32,
        json_schema_extra=source_of("ours"),
        description="seeds the drawn val/test splits and the shortcut audit",
    )
    max_pixels: int = Field(
        100_000_000,
        ge=1,
        json_schema_extra=source_of("ours"),
        description="decompression-bomb guard: larger images are refused",
    )
    on_bad_image: Literal["error", "skip"] = Field(
        "error",
        json_schema_extra=source_of("ours"),
        description="error: stop at the first unreadable/missing/oversized file; skip: skip and report all",
    )
    on_leak: Literal["warn", "error"] = Field(
        "warn",
        json_schema_extra=source_of("ours"),
        description="warn: loud line + report; error: refuse splits sharing patients or (near) duplicates",
    )
    near_duplicate_distance: int = Field(
        20,
        ge=0,
        le=256,
        json_schema_extra=source_of("ours"),
        description="max Hamming distance (of 256 pHash bits) of a near duplicate",
    )

    @field_validator("classes")
    @classmethod
    def _distinct_names(cls, classes: list[str]) -> list[str]:
        keys = [label_key(c) for c in classes]
        if len(classes) < 2 or "" in keys or len(set(keys)) < len(keys) or any("," in c for c in classes):
            raise refuse("must be two or more distinct class names (no commas), e.g. [normal, pneumonia]")
        return classes


class Augment(Section):
    shift_limit: float = Field(
        0.02,
        ge=0,
        le=0.5,
        json_schema_extra=source_of("report"),
        description="ShiftScaleRotate shift (fraction of the side), as Affine translate",
    )
    scale_limit: float = Field(
        0.08,
        ge=0,
        lt=1,
        json_schema_extra=source_of("report"),
        description="ShiftScaleRotate scale: zoom in 1 +- scale_limit",
    )
    rotate_limit: float = Field(
        5, ge=0, le=180, json_schema_extra=source_of("report"), description="ShiftScaleRotate rotation (degrees, +-)"
    )
    affine_p: float = Field(
        0.7, ge=0, le=1, json_schema_extra=source_of("report"), description="probability of the shift/scale/rotate"
    )
    brightness_limit: float = Field(
        0.1,
        ge=0,
        le=1,
        json_schema_extra=source_of("report", code=0.08),
        description="RandomBrightnessContrast brightness",
    )
    contrast_limit: float = Field(
        0.15,
        ge=0,
        le=1,
        json_schema_extra=source_of("report", code=0.12),
        description="RandomBrightnessContrast contrast",
    )
    brightness_contrast_p: float = Field(
        0.7,
        ge=0,
        le=1,
        json_schema_extra=source_of("report", code=0.6),
        description="probability of the brightness/contrast change",
    )
    noise_var_limit: list[float] = Field(
        default_factory=lambda: [5.0, 15.0],
        json_schema_extra=allows("[low, high], 0 <= low <= high", **source_of("report")),
        description="GaussNoise pixel variance (-> std_range in albumentations 2.x)",
    )
    noise_p: float = Field(
        0.15, ge=0, le=1, json_schema_extra=source_of("report"), description="probability of Gaussian noise"
    )
    hflip_p: float = Field(
        0.5, ge=0, le=1, json_schema_extra=source_of("code"), description="probability of a horizontal flip"
    )

    @field_validator("noise_var_limit")
    @classmethod
    def _low_high(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not 0 <= v[0] <= v[1]:
            raise refuse("must be two numbers [low, high] with 0 <= low <= high")
        return v


class Synthetic(Section):
    """The demo's generated films: demo/params.yaml only (the top-level pipeline reads real data)."""

    seed: int = Field(
        0,
        ge=0,
        lt=2**32,
        json_schema_extra=source_of("ours"),
        description="draws the synthetic films (same seed, same pixels)",
    )
    train: int = Field(360, ge=8, json_schema_extra=source_of("ours"), description="synthetic training films")
    val: int = Field(90, ge=4, json_schema_extra=source_of("ours"), description="synthetic validation films")
    test: int = Field(90, ge=4, json_schema_extra=source_of("ours"), description="synthetic test films")
    external: int = Field(
        60,
        ge=4,
        json_schema_extra=source_of("ours"),
        description="films of the external demo set (shifted acquisition, no COVID-19)",
    )


class Assemble(Section):
    """The study's data from its public sources (`make study-data`, docs/study-data.md): top-level
    params.yaml only; the demo synthesizes its films instead."""

    seed: int = Field(
        42,
        ge=0,
        lt=2**32,
        json_schema_extra=source_of("ours"),
        description="draws the capped subsets and the patient-grouped val/test splits",
    )
    val_fraction: float = Field(
        0.12,
        gt=0,
        lt=0.5,
        json_schema_extra={"source": "report (its set: 709 of 5908 films in val)"},
        description="share of all films in val (about: whole patients, stratified by class)",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        json_schema_extra={"source": "report (its set: 1182 of 5908 films in test)"},
        description="share of all films in test (about: whole patients, stratified by class)",
    )
    max_per_class: dict[str, Union[int, None]] = Field(
        default_factory=lambda: {c: None for c in STUDY_CLASSES},
        json_schema_extra=allows(
            "a mapping of normal, bacteria, virus, COVID-19 to null or an integer >= 1", **source_of("ours")
        ),
        description="per-class cap on films kept, whole patients drawn with `seed`; null keeps all",
    )

    @field_validator("max_per_class")
    @classmethod
    def _four_caps(cls, caps: dict) -> dict:
        # a mapping's key order means nothing in YAML (a tool that rewrites params.yaml may sort it)
        if sorted(caps) != sorted(STUDY_CLASSES) or any(v is not None and v < 1 for v in caps.values()):
            raise refuse("must map normal, bacteria, virus, COVID-19 to null or an integer >= 1")
        return {c: caps[c] for c in STUDY_CLASSES}

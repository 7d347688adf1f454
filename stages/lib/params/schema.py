"""Every param of params.yaml, declared once: type, default (the study's), allowed values, meaning.

`stages.lib.params.loader.load_params` checks params.yaml against `Config` before any work starts
(stages/lib/params/messages.py words what it refuses), and stages read `cfg.train.lr`. Validation is strict: a quoted "0.1" or "false" is refused, never
converted, and every key must be present (a default used silently would be a value DVC does not
track). docs/params.md is generated from the descriptions here (`python -m stages.lib.params.docs`).
"""
from __future__ import annotations

import re
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stages.lib.core.names import STUDY_CLASSES

STUDY_BACKBONES = ("resnet18", "densenet121", "efficientnet_b0", "convnext_tiny")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")

class Section(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", validate_default=True, allow_inf_nan=False)


def _allows(text: str, **source) -> dict:
    """What a field checked by its own validator accepts (for messages and docs/params.md)."""
    return {"allowed": text, **source}


def _src(source: str, code=None) -> dict:
    """Where a default comes from (docs/params.md): the study's `report`, its published `code` where the
    report is silent, or `ours`. `code` notes the code's value where it differs from the report's."""
    return {"source": source + (f" (its code: {code})" if code is not None else "")}


def refuse(rule: str, show_value: bool = True) -> PydanticCustomError:
    """A validation error whose message is `rule` ("must be ..."), shown after the key's name."""
    return PydanticCustomError("rule" if show_value else "sentence", rule)


class Preprocess(Section):
    img_size: int = Field(256, ge=32, le=1024, json_schema_extra=_src("report"),
                          description="final square size fed to the networks (px)")
    center_crop_ratio: float = Field(0.9, gt=0, le=1, json_schema_extra=_src("report", code=0.95),
                                     description="share of the short side kept by the centre crop")
    clahe_clip_limit: float = Field(1.5, gt=0, le=40, json_schema_extra=_src("report"),
                                    description="CLAHE clip limit (fixed, not sampled)")
    clahe_tile_grid: int = Field(8, ge=1, le=64, json_schema_extra=_src("report"),
                                 description="CLAHE tiles per side (8 -> 8x8)")


class Data(Section):
    layout: Literal["auto", "course", "folders", "kaggle-pneumonia", "manifest"] = Field(
        "auto", json_schema_extra=_src("ours"),
        description="dataset layout under data/; auto detects it (README 'Bring your own data')")
    classes: list[str] = Field(
        default_factory=lambda: list(STUDY_CLASSES),
        json_schema_extra=_allows("two or more distinct names", **_src("report")),
        description="the label set, in output order; other labels are refused (Kaggle: [normal, bacteria, virus] "
                    "or [normal, pneumonia])")
    val_fraction: float = Field(
        0.15, gt=0, le=0.5, json_schema_extra=_src("ours"),
        description="share of train held out as val when val is missing or too small")
    min_val: int = Field(20, ge=0, json_schema_extra=_src("ours"),
                         description="a smaller given val split is merged into train and re-split")
    test_fraction: float = Field(
        0.15, gt=0, le=0.5, json_schema_extra=_src("ours"),
        description="share of train held out as test when the layout has none")
    seed: int = Field(42, ge=0, lt=2**32, json_schema_extra=_src("ours"),
                      description="seeds the drawn val/test splits and the shortcut audit")
    max_pixels: int = Field(100_000_000, ge=1, json_schema_extra=_src("ours"),
                            description="decompression-bomb guard: larger images are refused")
    on_bad_image: Literal["error", "skip"] = Field(
        "error", json_schema_extra=_src("ours"),
        description="error: stop at the first unreadable/missing/oversized file; skip: skip and report all")
    on_leak: Literal["warn", "error"] = Field(
        "warn", json_schema_extra=_src("ours"),
        description="warn: loud line + report; error: refuse splits sharing patients or (near) duplicates")
    near_duplicate_distance: int = Field(
        20, ge=0, le=256, json_schema_extra=_src("ours"),
        description="max Hamming distance (of 256 pHash bits) of a near duplicate")

    @field_validator("classes")
    @classmethod
    def _distinct_names(cls, classes: list[str]) -> list[str]:
        from stages.lib.data.layouts import label_key  # the spelling rules labels are matched with

        keys = [label_key(c) for c in classes]
        if len(classes) < 2 or "" in keys or len(set(keys)) < len(keys) or any("," in c for c in classes):
            raise refuse("must be two or more distinct class names (no commas), e.g. [normal, pneumonia]")
        return classes


class Augment(Section):
    shift_limit: float = Field(
        0.02, ge=0, le=0.5, json_schema_extra=_src("report"),
        description="ShiftScaleRotate shift (fraction of the side), as Affine translate")
    scale_limit: float = Field(0.08, ge=0, lt=1, json_schema_extra=_src("report"),
                               description="ShiftScaleRotate scale: zoom in 1 +- scale_limit")
    rotate_limit: float = Field(5, ge=0, le=180, json_schema_extra=_src("report"),
                                description="ShiftScaleRotate rotation (degrees, +-)")
    affine_p: float = Field(0.7, ge=0, le=1, json_schema_extra=_src("report"),
                            description="probability of the shift/scale/rotate")
    brightness_limit: float = Field(0.1, ge=0, le=1, json_schema_extra=_src("report", code=0.08),
                                    description="RandomBrightnessContrast brightness")
    contrast_limit: float = Field(0.15, ge=0, le=1, json_schema_extra=_src("report", code=0.12),
                                  description="RandomBrightnessContrast contrast")
    brightness_contrast_p: float = Field(0.7, ge=0, le=1, json_schema_extra=_src("report", code=0.6),
                                         description="probability of the brightness/contrast change")
    noise_var_limit: list[float] = Field(
        default_factory=lambda: [5.0, 15.0],
        json_schema_extra=_allows("[low, high], 0 <= low <= high", **_src("report")),
        description="GaussNoise pixel variance (-> std_range in albumentations 2.x)")
    noise_p: float = Field(0.15, ge=0, le=1, json_schema_extra=_src("report"),
                           description="probability of Gaussian noise")
    hflip_p: float = Field(0.5, ge=0, le=1, json_schema_extra=_src("code"),
                           description="probability of a horizontal flip")

    @field_validator("noise_var_limit")
    @classmethod
    def _low_high(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not 0 <= v[0] <= v[1]:
            raise refuse("must be two numbers [low, high] with 0 <= low <= high")
        return v


class Plateau(Section):
    factor: float = Field(0.1, gt=0, lt=1, json_schema_extra=_src("code"),
                          description="ReduceLROnPlateau: lr *= factor when val macro-F1 stalls")
    patience: int = Field(5, ge=0, json_schema_extra=_src("code"),
                          description="ReduceLROnPlateau: epochs without a gain before lowering lr")


class Train(Section):
    pretrained: bool = Field(True, json_schema_extra=_src("report"),
                             description="ImageNet weights via torchvision's weights API; false = from scratch")
    lr: float = Field(5e-5, gt=0, le=1, json_schema_extra=_src("report", code="1e-4"),
                      description="AdamW learning rate")
    weight_decay: float = Field(2e-4, ge=0, le=1, json_schema_extra=_src("report", code="1e-4"),
                                description="AdamW weight decay")
    batch_size: int = Field(16, ge=1, json_schema_extra=_src("report", code=32),
                            description="images per step, per process")
    epochs: int = Field(50, ge=1, json_schema_extra=_src("report", code=30),
                        description="upper bound; early stopping usually ends sooner")
    dropout: float = Field(0.1, ge=0, lt=1, json_schema_extra=_src("report", code=0.05),
                           description="dropout before the new Linear head")
    scheduler: Literal["plateau", "cosine"] = Field(
        "plateau", json_schema_extra=_src("report"),
        description="plateau: ReduceLROnPlateau on val macro-F1; cosine: annealing over the epochs")
    plateau: Plateau = Field(default_factory=Plateau, description="the plateau scheduler's settings")
    min_lr: float = Field(1e-6, ge=0, json_schema_extra=_src("code"),
                          description="learning-rate floor of both schedulers")
    early_stopping_patience: int = Field(10, ge=1, json_schema_extra=_src("report", code=8),
                                         description="epochs without a val macro-F1 gain before stopping")
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "auto", json_schema_extra=_src("ours", code="fp16 autocast + GradScaler"),
        description="CUDA compute dtype (autocast): auto = bf16 where the GPU has it, else fp16 + "
                            "GradScaler; fp32 = no mixed precision. CPU runs fp32")
    compile: bool = Field(False, json_schema_extra=_src("ours"),
                          description="torch.compile the model (the first epoch compiles)")
    nproc: int = Field(
        1, ge=1, json_schema_extra=_src("ours"),
        description="processes (GPUs) training one backbone with DDP; > 1 re-launches via torchrun")
    deterministic: bool = Field(
        False, json_schema_extra=_src("ours"),
        description="deterministic CUDA kernels (slower); CPU runs are reproducible anyway")
    num_workers: Union[Literal["auto"], int] = Field(
        "auto", json_schema_extra=_allows("auto or an integer from 0 to 64", **_src("ours", code="max(1, cores // 2)")),
        description="DataLoader workers; auto = 0 on CPU, min(8, cores per process) on GPU")

    @field_validator("num_workers", mode="plain")
    @classmethod
    def _auto_or_count(cls, v):
        if v == "auto" or (type(v) is int and 0 <= v <= 64):
            return v
        raise refuse("must be auto or an integer from 0 to 64")


class Evaluate(Section):
    batch_size: int = Field(64, ge=1, json_schema_extra=_src("ours"), description="inference batch")
    tta_hflip: bool = Field(False, json_schema_extra=_src("ours"),
                            description="average each image's probabilities with its mirror's")
    bootstrap_resamples: int = Field(1000, ge=0, json_schema_extra=_src("ours"),
                                     description="resamples for the 95% confidence intervals (0: none)")
    seed: int = Field(0, ge=0, lt=2**32, json_schema_extra=_src("ours"),
                      description="seeds the bootstraps: CIs and paired comparisons")
    calibration_bins: int = Field(
        15, ge=1, le=1000, json_schema_extra=_src("ours"),
        description="equal-width confidence bins for ECE and reliability diagrams")
    gradcam_per_class: int = Field(2, ge=1, le=16, json_schema_extra=_src("ours"),
                                   description="images per class shown with Grad-CAM")
    alpha: float = Field(0.1, gt=0, lt=1, json_schema_extra=_src("ours"),
                         description="conformal prediction sets hold the true class with probability >= 1 - alpha "
                                     "(split-conformal, fitted on val; docs/calibration.md)")
    target_sensitivity: dict[str, float] = Field(
        default_factory=dict,
        json_schema_extra=_allows("a mapping of classes in data.classes to numbers in (0, 1]; {} for none",
                                  **_src("ours")),
        description="per class, the val sensitivity its operating-point threshold must reach, e.g. {COVID-19: "
                    "0.95}; reported on test, flagged by cxr4-predict")

    subgroups: list[str] = Field(
        default_factory=list,
        json_schema_extra=_allows("distinct column names of manifest.csv's film metadata; [] for none", **_src("ours")),
        description="metadata columns whose values are scored as subgroups (with n and CIs), besides every film's "
                    "file format and bit depth, which always are")

    @field_validator("subgroups")
    @classmethod
    def _distinct_columns(cls, v: list[str]) -> list[str]:
        if len(set(v)) < len(v) or any(not c.strip() for c in v):
            raise refuse("must be distinct, non-empty column names")
        return v

    @field_validator("target_sensitivity")
    @classmethod
    def _sensitivities(cls, v: dict[str, float]) -> dict[str, float]:
        bad = next((k for k, x in v.items() if not 0 < x <= 1), None)
        if bad is not None:
            raise refuse(f"must map each class to a sensitivity in (0, 1]; {bad} has {v[bad]:g}", show_value=False)
        return v


class Synthetic(Section):
    """The demo's generated films: demo/params.yaml only (the top-level pipeline reads real data)."""
    seed: int = Field(0, ge=0, lt=2**32, json_schema_extra=_src("ours"),
                      description="draws the synthetic films (same seed, same pixels)")
    train: int = Field(360, ge=8, json_schema_extra=_src("ours"), description="synthetic training films")
    val: int = Field(90, ge=4, json_schema_extra=_src("ours"), description="synthetic validation films")
    test: int = Field(90, ge=4, json_schema_extra=_src("ours"), description="synthetic test films")
    external: int = Field(60, ge=4, json_schema_extra=_src("ours"),
                          description="films of the external demo set (shifted acquisition, no COVID-19)")


class Assemble(Section):
    """The study's data from its public sources (`make study-data`, docs/study-data.md): top-level
    params.yaml only; the demo synthesizes its films instead."""
    seed: int = Field(42, ge=0, lt=2**32, json_schema_extra=_src("ours"),
                      description="draws the capped subsets and the patient-grouped val/test splits")
    val_fraction: float = Field(
        0.12, gt=0, lt=0.5, json_schema_extra={"source": "report (its set: 709 of 5908 films in val)"},
        description="share of all films in val (about: whole patients, stratified by class)")
    test_fraction: float = Field(
        0.2, gt=0, lt=0.5, json_schema_extra={"source": "report (its set: 1182 of 5908 films in test)"},
        description="share of all films in test (about: whole patients, stratified by class)")
    max_per_class: dict[str, Union[int, None]] = Field(
        default_factory=lambda: {c: None for c in STUDY_CLASSES},
        json_schema_extra=_allows("a mapping of normal, bacteria, virus, COVID-19 to null or an integer >= 1",
                                  **_src("ours")),
        description="per-class cap on films kept, whole patients drawn with `seed`; null keeps all")

    @field_validator("max_per_class")
    @classmethod
    def _four_caps(cls, caps: dict) -> dict:
        # a mapping's key order means nothing in YAML (a tool that rewrites params.yaml may sort it)
        if sorted(caps) != sorted(STUDY_CLASSES) or any(v is not None and v < 1 for v in caps.values()):
            raise refuse("must map normal, bacteria, virus, COVID-19 to null or an integer >= 1")
        return {c: caps[c] for c in STUDY_CLASSES}


OPTIONAL_SECTIONS = {"synthetic", "assemble"}  # may be absent: synthetic is demo/params.yaml's, assemble the top's


class Config(Section):
    """params.yaml. `backbones` sits outside `train` so the train stage can depend on `train` whole."""
    preprocess: Preprocess = Field(default_factory=Preprocess, description="run once per image")
    data: Data = Field(default_factory=Data, description="reading data/")
    augment: Augment = Field(default_factory=Augment, description="train-time augmentation")
    backbones: list[str] = Field(
        default_factory=lambda: list(STUDY_BACKBONES),
        json_schema_extra=_allows("distinct names, each with a record in stages/lib/model/registry.py", **_src("report")),
        description="the networks trained and compared; dvc.yaml loops over them")
    seeds: list[int] = Field(
        default_factory=lambda: [42],
        json_schema_extra=_allows("distinct integers from 0 to 2**32 - 1", **_src("ours")),
        description="one training run per backbone and seed (dvc.yaml's matrix); the report gives their spread and "
                    "scores each backbone's seed ensemble")
    train: Train = Field(default_factory=Train, description="training")
    evaluate: Evaluate = Field(default_factory=Evaluate, description="scoring")
    synthetic: Union[Synthetic, None] = Field(
        None, description="demo/params.yaml only: the synthetic films its first stage writes")
    assemble: Union[Assemble, None] = Field(
        None, description="params.yaml only: the study's data assembled from its public sources")
    external: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra=_allows("a mapping of names (letters, digits, - _ .) to DVC-tracked folders relative to "
                                  "the project, other than data; {} for none", **_src("ours")),
        description="external labelled datasets, each in any layout preprocess reads: preprocessed alike and scored "
                    "by every model (dvc.yaml's external@<name>; docs/calibration.md)")

    @field_validator("external")
    @classmethod
    def _external_sets(cls, sets: dict[str, str]) -> dict[str, str]:
        for name, folder in sets.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise refuse(f"names {name!r}: use letters, digits, '-', '_' or '.' (it names the stage and its "
                             "files)", show_value=False)
            parts = folder.replace("\\", "/").strip("/").split("/")
            if folder.startswith("/") or ".." in parts or parts[0] in ("", "data", "cache", "models"):
                raise refuse(f"{name}: {folder!r} must be a folder inside the project other than data/ (and not "
                             "cache/ or models/), e.g. data_external/" + name, show_value=False)
        return sets

    @model_validator(mode="after")
    def _known_classes(self) -> "Config":
        unknown = [c for c in self.evaluate.target_sensitivity if c not in self.data.classes]
        if unknown:
            raise refuse(f"evaluate.target_sensitivity names {unknown[0]!r}, not in data.classes "
                         f"{self.data.classes}; use one of those names", show_value=False)
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
        from stages.lib.model.registry import BACKBONES  # the registry imports torchvision: only when validating

        unknown = [n for n in names if n not in BACKBONES]
        if unknown:
            raise refuse(f"lists {unknown[0]!r}, which has no record in stages/lib/model/registry.py (records: "
                         f"{', '.join(BACKBONES)}); add its record there or remove the name", show_value=False)
        if not names or len(set(names)) < len(names):
            raise refuse("must be a non-empty list of distinct names")
        return names

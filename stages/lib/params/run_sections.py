"""The params sections about the runs: train (with its plateau schedule) and evaluate."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator

from stages.lib.params.base import PRECISIONS, Section, allows, refuse, source_of


class Plateau(Section):
    factor: float = Field(
        0.1,
        gt=0,
        lt=1,
        json_schema_extra=source_of("code"),
        description="ReduceLROnPlateau: lr *= factor when val macro-F1 stalls",
    )
    patience: int = Field(
        5,
        ge=0,
        json_schema_extra=source_of("code"),
        description="ReduceLROnPlateau: epochs without a gain before lowering lr",
    )


class Train(Section):
    pretrained: bool = Field(
        True,
        json_schema_extra=source_of("report"),
        description="ImageNet weights via torchvision's weights API; false = from scratch",
    )
    lr: float = Field(
        5e-5, gt=0, le=1, json_schema_extra=source_of("report", code="1e-4"), description="AdamW learning rate"
    )
    weight_decay: float = Field(
        2e-4, ge=0, le=1, json_schema_extra=source_of("report", code="1e-4"), description="AdamW weight decay"
    )
    batch_size: int = Field(
        16, ge=1, json_schema_extra=source_of("report", code=32), description="images per step, per process"
    )
    epochs: int = Field(
        50,
        ge=1,
        json_schema_extra=source_of("report", code=30),
        description="upper bound; early stopping usually ends sooner",
    )
    dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        json_schema_extra=source_of("report", code=0.05),
        description="dropout before the new Linear head",
    )
    scheduler: Literal["plateau", "cosine"] = Field(
        "plateau",
        json_schema_extra=source_of("report"),
        description="plateau: ReduceLROnPlateau on val macro-F1; cosine: annealing over the epochs",
    )
    plateau: Plateau = Field(default_factory=Plateau, description="the plateau scheduler's settings")
    min_lr: float = Field(
        1e-6, ge=0, json_schema_extra=source_of("code"), description="learning-rate floor of both schedulers"
    )
    early_stopping_patience: int = Field(
        10,
        ge=1,
        json_schema_extra=source_of("report", code=8),
        description="epochs without a val macro-F1 gain before stopping",
    )
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "auto",
        json_schema_extra=source_of("ours", code="fp16 autocast + GradScaler"),
        description="CUDA compute dtype (autocast): auto = bf16 where the GPU has it, else fp16 + "
        "GradScaler; fp32 = no mixed precision. CPU runs fp32",
    )
    compile: bool = Field(
        False, json_schema_extra=source_of("ours"), description="torch.compile the model (the first epoch compiles)"
    )
    nproc: int = Field(
        1,
        ge=1,
        json_schema_extra=source_of("ours"),
        description="processes (GPUs) training one backbone with DDP; > 1 re-launches via torchrun",
    )
    deterministic: bool = Field(
        False,
        json_schema_extra=source_of("ours"),
        description="deterministic CUDA kernels (slower); CPU runs are reproducible anyway",
    )
    num_workers: Union[Literal["auto"], int] = Field(
        "auto",
        json_schema_extra=allows("auto or an integer from 0 to 64", **source_of("ours", code="max(1, cores // 2)")),
        description="DataLoader workers; auto = 0 on CPU, min(8, cores per process) on GPU",
    )

    threads: Union[int, None] = Field(
        None,
        json_schema_extra=allows("null or an integer from 1 to 1024", **source_of("ours")),
        description="CPU threads torch computes with, in train and evaluate (numbers on a CPU depend on it: the "
        "order sums are added in); null = torch's default, OMP_NUM_THREADS if set, else one per physical core",
    )

    @field_validator("threads", mode="plain")
    @classmethod
    def _null_or_count(cls, v):
        if v is None or (type(v) is int and 1 <= v <= 1024):
            return v
        raise refuse("must be null or an integer from 1 to 1024")

    @field_validator("num_workers", mode="plain")
    @classmethod
    def _auto_or_count(cls, v):
        if v == "auto" or (type(v) is int and 0 <= v <= 64):
            return v
        raise refuse("must be auto or an integer from 0 to 64")


class Evaluate(Section):
    batch_size: int = Field(64, ge=1, json_schema_extra=source_of("ours"), description="inference batch")
    tta_hflip: bool = Field(
        False, json_schema_extra=source_of("ours"), description="average each image's probabilities with its mirror's"
    )
    bootstrap_resamples: int = Field(
        1000,
        ge=0,
        json_schema_extra=source_of("ours"),
        description="resamples for the 95% confidence intervals (0: none)",
    )
    seed: int = Field(
        0,
        ge=0,
        lt=2**32,
        json_schema_extra=source_of("ours"),
        description="seeds the bootstraps: CIs and paired comparisons",
    )
    calibration_bins: int = Field(
        15,
        ge=1,
        le=1000,
        json_schema_extra=source_of("ours"),
        description="equal-width confidence bins for ECE and reliability diagrams",
    )
    gradcam_per_class: int = Field(
        2, ge=1, le=16, json_schema_extra=source_of("ours"), description="images per class shown with Grad-CAM"
    )
    alpha: float = Field(
        0.1,
        gt=0,
        lt=1,
        json_schema_extra=source_of("ours"),
        description="conformal prediction sets hold the true class with probability >= 1 - alpha "
        "(split-conformal, fitted on val; docs/calibration.md)",
    )
    target_sensitivity: dict[str, float] = Field(
        default_factory=dict,
        json_schema_extra=allows(
            "a mapping of classes in data.classes to numbers in (0, 1]; {} for none", **source_of("ours")
        ),
        description="per class, the val sensitivity its operating-point threshold must reach, e.g. {COVID-19: "
        "0.95}; reported on test, flagged by cxr4-predict",
    )

    subgroups: list[str] = Field(
        default_factory=list,
        json_schema_extra=allows(
            "distinct column names of manifest.csv's film metadata; [] for none", **source_of("ours")
        ),
        description="metadata columns whose values are scored as subgroups (with n and CIs), besides every film's "
        "file format and bit depth, which always are",
    )

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

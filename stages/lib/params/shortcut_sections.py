"""The params sections about what lies outside the lungs: the region hidden (hide_lungs) and the classifier that
sees only the rest of the film (pixel_shortcut)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from stages.lib.params.base import Section, allows, refuse, source_of

# On the 240 cxr4 films as the study's preprocessing caches them (0.9 centre crop), the lungs fill nearly the
# whole frame: a box 5% in from each edge covers both on most films (docs/shortcuts.md says how it was checked).
EDGE = 0.05


class HideLungs(Section):
    top: float = Field(
        EDGE,
        ge=0,
        lt=1,
        json_schema_extra=source_of("ours"),
        description="the hidden box's top edge, as a fraction of the cached film's height from its top",
    )
    bottom: float = Field(
        1 - EDGE,
        gt=0,
        le=1,
        json_schema_extra=source_of("ours"),
        description="the box's bottom edge, a fraction of the height from the top",
    )
    left: float = Field(
        EDGE,
        ge=0,
        lt=1,
        json_schema_extra=source_of("ours"),
        description="the box's left edge, a fraction of the width from the left",
    )
    right: float = Field(
        1 - EDGE,
        gt=0,
        le=1,
        json_schema_extra=source_of("ours"),
        description="the box's right edge, a fraction of the width from the left",
    )
    fill: int = Field(
        0,
        ge=0,
        le=255,
        json_schema_extra=source_of("ours"),
        description="the constant grey level (0-255) every pixel of the box is set to (0: black, as Maguolo and "
        "Nanni 2021 blacked out the lungs)",
    )

    @model_validator(mode="after")
    def _a_box(self) -> HideLungs:
        if not (self.top < self.bottom and self.left < self.right):
            raise refuse(
                f"hide_lungs: top {self.top:g} must lie above bottom {self.bottom:g} and left {self.left:g} left of "
                f"right {self.right:g} (fractions of the film from its top and left edges)",
                show_value=False,
            )
        return self


class PixelShortcut(Section):
    grid: int = Field(
        16,
        ge=2,
        le=64,
        json_schema_extra=source_of("ours"),
        description="the film with the lungs hidden is averaged down to grid x grid cells (body size and position, "
        "devices, markers, collimation)",
    )
    bins: int = Field(
        32,
        ge=2,
        le=256,
        json_schema_extra=source_of("ours"),
        description="bins of the grey-level histogram of the pixels outside the box (exposure, the scanner's look)",
    )
    C: list[float] = Field(
        default_factory=lambda: [0.01, 0.1, 1.0, 10.0],
        json_schema_extra=allows("a non-empty list of positive numbers", **source_of("ours")),
        description="inverse regularisation strengths of the L2 logistic regressions tried; val picks the best",
    )
    boosting: bool = Field(
        True,
        json_schema_extra=source_of("ours"),
        description="also try gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier)",
    )
    seed: int = Field(
        0,
        ge=0,
        lt=2**32,
        json_schema_extra=source_of("ours"),
        description="seeds the boosted trees (their early-stopping split on large train sets)",
    )

    @field_validator("C")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(c <= 0 for c in v):
            raise refuse("must be a non-empty list of positive numbers")
        return v

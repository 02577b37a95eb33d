"""What a run is told about validation: held-out data, early stopping, how to pick an epoch.

These are `Tuner` arguments rather than `PromptTuningParameters` fields because they are not
tuning parameters of the service: watsonx.ai's training API takes no validation data and has
no early stopping (protocol §7), so they must never reach its request body. `start_tuning`
takes them as `validation=`; a backend whose `supports_validation` is false refuses them, and
`Tuner` checks that before anything is uploaded.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field

from granite_tuner.errors import InvalidParametersError, UnsupportedFeatureError

__all__ = [
    "SelectionMetric",
    "ValidationOptions",
    "check_backend_accepts",
    "validation_options",
]

#: The validation figure that decides which epoch's soft prompt is kept.
SelectionMetric = Literal["loss", "accuracy"]


class ValidationOptions(BaseModel):
    """Validation settings of one run; `None` fields take the backend's defaults.

    `data_ref` is validation data uploaded like training data; without it the backend holds out
    `split` of the training data (stratified by label). `split=0` turns validation off, and
    `early_stopping_patience=0` early stopping.
    """

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    data_ref: str | None = None
    split: float | None = Field(default=None, ge=0.0, lt=1.0)
    early_stopping_patience: int | None = Field(default=None, ge=0)
    selection_metric: SelectionMetric | None = None

    @property
    def requested(self) -> bool:
        """Whether the caller asked for anything at all."""
        return any(value is not None for value in self.model_dump().values())


def validation_options(
    *,
    validation_data: object | None,
    validation_split: float | None,
    early_stopping_patience: int | None,
    selection_metric: str | None,
) -> ValidationOptions:
    """`Tuner`'s validation arguments, checked: `InvalidParametersError` naming the bad one."""
    if validation_data is not None and validation_split is not None:
        raise InvalidParametersError(
            "Give validation_data or validation_split, not both: validation_data is the held-out "
            "set itself, validation_split the share of the training data to hold out instead.",
            field="validation_split",
        )
    if validation_split is not None and (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, int | float)
        or not 0 <= validation_split < 1
    ):
        raise InvalidParametersError(
            f"validation_split={validation_split!r} must be a share from 0 (no validation) to "
            "below 1, e.g. 0.2.",
            field="validation_split",
        )
    if early_stopping_patience is not None and (
        isinstance(early_stopping_patience, bool)
        or not isinstance(early_stopping_patience, int)
        or early_stopping_patience < 0
    ):
        raise InvalidParametersError(
            f"early_stopping_patience={early_stopping_patience!r} must be a whole number of "
            "epochs, 1 or more (0: never stop early).",
            field="early_stopping_patience",
        )
    if selection_metric is not None and selection_metric not in get_args(SelectionMetric):
        raise InvalidParametersError(
            f"selection_metric={selection_metric!r} is not valid; choose 'accuracy' or 'loss'.",
            field="selection_metric",
        )
    return ValidationOptions(
        split=None if validation_split is None else float(validation_split),
        early_stopping_patience=early_stopping_patience,
        selection_metric=cast("SelectionMetric | None", selection_metric),
    )


def check_backend_accepts(
    backend_name: str, supports_validation: bool, options: ValidationOptions, *, has_data: bool
) -> None:
    """`UnsupportedFeatureError` when validation was asked of a backend that cannot use it
    (`has_data`: validation data was given, not yet uploaded)."""
    if not (options.requested or has_data) or supports_validation:
        return
    asked = [
        label
        for label, value in (
            ("validation_data", True if has_data else None),
            ("validation_split", options.split),
            ("early_stopping_patience", options.early_stopping_patience),
            ("selection_metric", options.selection_metric),
        )
        if value is not None
    ]
    raise UnsupportedFeatureError(
        f"The {backend_name} backend cannot use {', '.join(asked)}: its tuning API takes "
        "training data and tuning parameters only (watsonx.ai documents no validation data and "
        "no early stopping). Leave these out for this backend, or tune with the local backend "
        "(LocalClient), which validates after every epoch and keeps the best one."
    )

"""The ``train`` section of ``params.yaml``: its keys, defaults and checks.

Kept free of Keras so that a bad param fails in a fraction of a second, before
the command pays for importing Keras.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from celestial_data.errors import ParamsError as DataParamsError
from celestial_data.params import check_keys
from celestial_models.errors import ParamsError

__all__ = ["ARCHITECTURE_NAMES", "DEFAULTS", "LR_SCHEDULES", "resolve_params"]

#: Names accepted by ``train.architecture`` (the keys of `architectures.ARCHITECTURES`).
ARCHITECTURE_NAMES = ("compact_cnn", "simple_cnn")
LR_SCHEDULES = ("constant", "cosine")

#: The ``train`` section of ``params.yaml``: every key and its default.
DEFAULTS: dict[str, Any] = {
    "architecture": "compact_cnn",
    "seed": 0,
    "epochs": 8,
    "batch_size": 32,
    "learning_rate": 0.003,
    "lr_schedule": "cosine",
    "conv_size": 16,
    "dense_size": 0,
    "patience": 3,
    "augment": {"flip": False, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0},
}


def resolve_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """`DEFAULTS` updated with ``params``, checked key by key and value by value.

    Raises:
        ParamsError: If a key is unknown or a value has the wrong type or range.
    """
    params = dict(params or {})
    if not isinstance(params.get("augment", {}), Mapping):
        raise ParamsError(
            "params train.augment must be a mapping of augmentation names to values "
            f"({', '.join(DEFAULTS['augment'])}). Received: {params['augment']!r}"
        )
    try:
        check_keys(params, DEFAULTS, "params train")
        check_keys(params.get("augment", {}), DEFAULTS["augment"], "params train.augment")
    except DataParamsError as error:  # re-raised as this package's own
        raise ParamsError(str(error)) from error
    resolved = {
        **DEFAULTS,
        **params,
        "augment": {**DEFAULTS["augment"], **params.get("augment", {})},
    }
    _check_choice(resolved, "architecture", ARCHITECTURE_NAMES)
    _check_choice(resolved, "lr_schedule", LR_SCHEDULES)
    for key, low in (("seed", 0), ("epochs", 1), ("batch_size", 1), ("conv_size", 1)):
        _check_int(resolved, key, low)
    _check_int(resolved, "dense_size", 1 if resolved["architecture"] == "simple_cnn" else 0)
    _check_int(resolved, "patience", 1)
    _check_number(resolved, "learning_rate", 0.0, math.inf)
    augment = resolved["augment"]
    if not isinstance(augment["flip"], bool):
        raise ParamsError(
            f"params train.augment.flip must be true or false. Received: {augment['flip']!r}"
        )
    for key in ("rotation", "zoom", "brightness"):
        _check_number(augment, key, 0.0, 1.0, where="train.augment", closed_low=True)
    return resolved


def _check_choice(params: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if params[key] not in choices:
        raise ParamsError(
            f"params train.{key} must be one of {', '.join(choices)}. Received: {params[key]!r}"
        )


def _check_int(params: Mapping[str, Any], key: str, low: int) -> None:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParamsError(f"params train.{key} must be an integer >= {low}. Received: {value!r}")


def _check_number(
    params: Mapping[str, Any],
    key: str,
    low: float,
    high: float,
    where: str = "train",
    closed_low: bool = False,
) -> None:
    value = params[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (low <= value if closed_low else low < value) or not value < high:
        bounds = f"{'>=' if closed_low else '>'} {low}" + (
            f" and < {high}" if high < math.inf else ""
        )
        raise ParamsError(f"params {where}.{key} must be a number {bounds}. Received: {value!r}")

"""Typed params: one frozen model per section of a project's ``params.yaml``.

Each section is a `Params` subclass that lives beside the code that reads it
(``PrepareParams`` in `celestial_data.prepare`, ``TrainParams`` in
`celestial_models.params`, ...). A command loads its section once with
`Params.load` and passes the typed object down; a misspelt key or a bad value
fails there, in one clear line, before any heavy import.

Adding a parameter is one field with its default, range and description on
the section's model, plus its use: the docs' params reference is generated
from the fields (`reference_rows`).

This module lives in celestial-data, the package every other one builds on,
so that all sections share one loader and one error type.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from celestial_data.errors import ParamsError

__all__ = ["Params", "read_document", "reference_rows"]


class Params(BaseModel):
    """Base of every params section: frozen, strict about types, no unknown keys.

    Subclasses set `section` (the key in ``params.yaml``) and declare one
    field per key, with its default, its range as ``Field`` constraints and
    a ``description`` (the docs' reference text).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    section: ClassVar[str] = ""
    """The section's key in ``params.yaml``."""

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None = None, where: str | None = None) -> Self:
        """The section from a mapping of its keys (missing keys take their defaults).

        Args:
            values: The section's keys and values, as read from YAML.
            where: Where they come from, for messages (default ``params <section>``).

        Raises:
            ParamsError: If a key is unknown or a value has the wrong type or range.
        """
        where = where or f"params {cls.section}"
        if values is not None and not isinstance(values, Mapping):
            raise ParamsError(
                f"{where} must be a mapping of keys to values. Received: {values!r:.100}"
            )
        try:
            return cls.model_validate(dict(values or {}))
        except ValidationError as error:
            lines = [_explain(cls, detail, where) for detail in error.errors()]
            raise ParamsError("\n".join(lines)) from None

    @classmethod
    def load(cls, path: str | Path | None) -> Self:
        """The section read from the YAML file at ``path`` (None: the defaults).

        A file without the section gives the defaults; a file that was named
        but cannot be read is an error.

        Raises:
            ParamsError: If the file is missing or not YAML, or the section is invalid.
        """
        if path is None:
            return cls()
        return cls.parse(read_document(path).get(cls.section), f"{path}: {cls.section}")

    def dump(self) -> dict[str, Any]:
        """The section as plain YAML/JSON values, every key present."""
        return self.model_dump(mode="json")


def read_document(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of the YAML file at ``path``.

    Raises:
        ParamsError: If the file is missing, not YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"Params file {path} not found. Pass --params with an existing file.")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ParamsError(f"{path} must be a mapping of sections (prepare:, train:, ...).")
    return document


def _fields(
    model: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[type[BaseModel], list[str]]:
    """The keys of ``loc`` that name fields, and the model holding the last of them.

    Pydantic's locations also name union members and list indexes: they are
    dropped, so a message names the key a user wrote.
    """
    keys: list[str] = []
    for key in loc:
        if not isinstance(key, str) or key not in model.model_fields:
            break
        keys.append(key)
        annotation = model.model_fields[key].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model, keys


def _explain(model: type[Params], detail: ErrorDetails, where: str) -> str:
    """One line for one validation error: what was expected, what was received."""
    holder, keys = _fields(model, detail["loc"])
    if detail["type"] == "extra_forbidden":
        accepted = list(holder.model_fields)
        unknown = str(detail["loc"][-1])
        close = difflib.get_close_matches(unknown, accepted, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        inside = ".".join([where, *keys])
        return f"Unknown key '{unknown}' in {inside}.{hint} Accepted keys: {', '.join(accepted)}."
    message = detail["msg"].removeprefix("Value error, ")
    if not keys:  # a check across several keys
        return f"{where}: {message}"
    dotted = ".".join([where, *keys])
    if detail["type"] in ("model_type", "model_attributes_type"):
        message = "Input should be a mapping of keys to values"
    if "Received:" in message:
        return f"{dotted}: {message}"
    return f"{dotted}: {message}. Received: {detail['input']!r:.100}"


def reference_rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """``(key, default, description)`` for each key of ``model``, nested keys dotted.

    The default is written as it would be in ``params.yaml``.
    """
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from reference_rows(annotation, f"{prefix}{name}.")
            continue
        default = yaml.safe_dump(field.get_default(call_default_factory=True))
        default = default.removesuffix("\n").removesuffix("\n...")
        yield f"{prefix}{name}", default, field.description or ""

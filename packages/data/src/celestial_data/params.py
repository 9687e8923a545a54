"""Typed params: one frozen model per section of a project's ``params.yaml``.

Each section is a `Params` subclass that lives beside the code that reads it
(``PrepareParams`` in `celestial_data.prepare`, ``TrainParams`` in
`celestial_models.params`, ...). A command loads its section once with
`Params.load` and passes the typed object down; a misspelt key or a bad value
fails there, in one clear line, before any heavy import.

Adding a parameter is one field with its default, range and description on
the section's model, plus its use: the docs' params reference is generated
from the fields (``tools/params_reference.py``).

This module lives in celestial-data, the package every other one builds on,
so that all sections share one loader and one error type.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from celestial_data.errors import ParamsError

__all__ = ["Params", "read_yaml"]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does, as DVC does.

    PyYAML follows YAML 1.1, where an exponent without a dot (``1e-05``,
    ``3e-3``) is text; DVC reads YAML 1.2, where it is a number, and writes
    such numbers itself (``dvc exp run -S train.learning_rate=0.00001`` puts
    ``1e-05`` in ``params.yaml``).
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str | bytes) -> Any:
    """The YAML document ``text``, its numbers read as DVC reads them (see `_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # a subclass of the safe loader


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
    def parse(cls, values: Any = None, where: str | None = None) -> Self:
        """The section from a mapping of its keys (missing keys take their defaults).

        Args:
            values: The section's keys and values, as read from YAML.
            where: Where they come from, for messages (default ``params <section>``).

        Raises:
            ParamsError: If a key is unknown or a value has the wrong type or range.
        """
        where = where or f"params {cls.section}"
        try:
            return cls.model_validate({} if values is None else values)
        except ValidationError as error:
            lines = [_explain(cls, detail, where) for detail in error.errors()]
            raise ParamsError("\n".join(lines)) from None

    @classmethod
    def of(cls, value: Self | Mapping[str, Any] | None) -> Self:
        """``value`` as this section: itself, the defaults for None, or a mapping parsed.

        What a function of the Python API does with the params it is given, so
        that a plain dict works as the typed object does.

        Raises:
            ParamsError: If ``value`` is neither, or the mapping is invalid.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.parse(value)
        raise ParamsError(
            f"params {cls.section} must be a {cls.__name__} or a mapping of its keys (a dict). "
            f"Received: {type(value).__name__}"
        )

    @classmethod
    def load(cls, path: str | Path | None) -> Self:
        """The section read from the YAML file at ``path`` (None: the defaults).

        A file without the section gives the defaults; a file that was named
        but cannot be read is an error, and so is one whose section looks
        misspelt or misplaced (see `_check_placement`): either would leave
        the user's values unread, without a word.

        Raises:
            ParamsError: If the file is missing or not YAML, or the section is
                invalid, misspelt or misplaced.
        """
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise ParamsError(f"Params file {path} not found. Pass --params with an existing file.")
        try:
            document = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ParamsError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(document, dict):
            raise ParamsError(f"{path} must be a mapping of sections (prepare:, train:, ...).")
        _check_placement(cls, document, path)
        return cls.parse(document.get(cls.section), f"{path}: {cls.section}")

    def dump(self) -> dict[str, Any]:
        """The section as plain YAML/JSON values, every key present."""
        return self.model_dump(mode="json")


def _check_placement(cls: type[Params], document: Mapping[Any, Any], path: Path) -> None:
    """Refuse a file whose ``cls`` section looks misspelt or whose sub-section sits outside it.

    Other top-level keys are left alone: a project may keep sections of its
    own in ``params.yaml``. Two mistakes are not: the section missing beside
    a key that looks like its name (``trian:``, ``Train:``), and a mapping at
    the top named as one of the section's own sub-sections (``view:``
    indented one level too little), whose keys would silently keep their
    defaults.

    Raises:
        ParamsError: Naming the key and the fix.
    """
    section = cls.section
    keys = [key for key in document if isinstance(key, str)]
    if section not in document:
        close = [key for key in keys if key.lower() == section.lower()]
        close = close or difflib.get_close_matches(section, keys, n=1, cutoff=0.75)
        if close:
            raise ParamsError(
                f"{path} has no '{section}' section, but has '{close[0]}': did you mean "
                f"'{section}'? Rename it; as it is, every {section} key keeps its default."
            )
    for key, field in cls.model_fields.items():
        nested = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        if nested and isinstance(document.get(key), dict):
            raise ParamsError(
                f"{path}: '{key}' is at the top of the file, but it is a key of the "
                f"'{section}' section. Indent it and its keys under '{section}:' (YAML nests "
                f"by indentation); as it is, {section}.{key} keeps its defaults."
            )


def _explain(model: type[BaseModel], detail: Mapping[str, Any], where: str) -> str:
    """One line for one validation error: where, what was expected, what was received."""
    keys: list[str] = []
    fields = model.model_fields
    # Pydantic's location also names union members and list indexes: the
    # message names only the keys a user wrote.
    for key in detail["loc"]:
        if key not in fields:
            break
        keys.append(str(key))
        fields = getattr(fields[str(key)].annotation, "model_fields", {})
    place = ".".join([where, *keys])
    if detail["type"] == "extra_forbidden":
        unknown = str(detail["loc"][-1])
        close = difflib.get_close_matches(unknown, list(fields), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"Unknown key '{unknown}' in {place}.{hint} Accepted keys: {', '.join(fields)}."
    if detail["type"] == "model_type":
        return f"{place} must be a mapping of keys to values. Received: {detail['input']!r:.100}"
    message = detail["msg"].removeprefix("Value error, ")
    if not keys:  # a check across several keys
        return f"{place}: {message}"
    return f"{place}: {message}. Received: {detail['input']!r:.100}"

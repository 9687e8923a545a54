"""Read one section of a project's ``params.yaml``, strictly.

Every command of the workspace reads its own section through `read_section`,
so a misspelt key fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from celestial_data.errors import ParamsError

__all__ = ["check_keys", "read_section"]


def check_keys(values: Mapping[str, Any], accepted: Mapping[str, Any], where: str) -> None:
    """Raise `ParamsError` naming any key of ``values`` not in ``accepted``.

    Args:
        values: The keys given by the user.
        accepted: The keys that are understood (e.g. a dict of defaults).
        where: Where the keys come from, for the message (``"params.yaml: train"``).
    """
    for key in values:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ParamsError(
                f"Unknown key '{key}' in {where}.{hint} Accepted keys: {', '.join(accepted)}."
            )


def read_section(
    path: str | Path | None, section: str, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Return ``defaults`` updated with ``section`` of the YAML file at ``path``.

    Nested mappings in ``defaults`` are merged one level deep and checked the
    same way. A missing file or section gives the defaults only when ``path`` is
    None; a file that was named but cannot be read is an error.

    Raises:
        ParamsError: If the file is missing or not YAML, or a key is unknown.
    """
    merged = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in defaults.items()
    }
    if path is None:
        return merged
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"Params file {path} not found. Pass --params with an existing file.")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from error
    given = document.get(section) or {}
    if not isinstance(given, Mapping):
        raise ParamsError(f"Section '{section}' of {path} must be a mapping of keys to values.")
    check_keys(given, defaults, f"{path}: {section}")
    for key, value in given.items():
        if isinstance(defaults[key], Mapping):
            if not isinstance(value, Mapping):
                raise ParamsError(f"{path}: {section}.{key} must be a mapping. Received: {value!r}")
            check_keys(value, defaults[key], f"{path}: {section}.{key}")
            merged[key].update(value)
        else:
            merged[key] = value
    return merged

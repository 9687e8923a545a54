"""Write the params reference of ``docs/pipeline.md`` from the params models.

Each section's table sits between ``<!-- params: SECTION -->`` and
``<!-- /params -->`` and is generated from the fields of that section's model
(key, default, description), so the page cannot drift from the code.
``nox -s docs`` writes it; ``--check`` (run by the tests) fails when the page
is stale.

Usage::

    python tools/params_reference.py [--check] [PAGE]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel

from celestial_data.params import Params
from celestial_data.prepare import PrepareParams
from celestial_data.synth import SynthParams
from celestial_eval.drift import DriftParams
from celestial_eval.evaluate import EvaluateParams
from celestial_eval.rejection import RejectionParams
from celestial_models.ood import OodParams
from celestial_models.params import TrainParams

__all__ = ["SECTIONS", "main", "reference_rows", "render", "table"]

#: Every section of ``params.yaml``, in pipeline order.
SECTIONS: tuple[type[Params], ...] = (
    SynthParams,
    PrepareParams,
    TrainParams,
    OodParams,
    EvaluateParams,
    RejectionParams,
    DriftParams,
)
PAGE = Path(__file__).resolve().parents[1] / "docs" / "pipeline.md"
BLOCK = re.compile(r"(<!-- params: (\w+) -->\n).*?(<!-- /params -->)", re.DOTALL)


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
        yield (
            f"{prefix}{name}",
            default.removesuffix("\n").removesuffix("\n..."),
            field.description or "",
        )


def table(model: type[Params]) -> str:
    """The Markdown table of one section: key, default, effect."""
    rows = [f"| `{key}` | `{default}` | {text} |" for key, default, text in reference_rows(model)]
    return "\n".join(["| key | default | effect |", "| --- | --- | --- |", *rows]) + "\n"


def render(text: str) -> str:
    """``text`` with every section's table regenerated.

    Raises:
        ValueError: If a section has no block in the page, or a block names no section.
    """
    models = {model.section: model for model in SECTIONS}
    found = [match.group(2) for match in BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(models))
    missing = [name for name in models if name not in found]
    if unknown or missing:
        raise ValueError(
            f"The params blocks name {found}; expected one per section {list(models)} "
            f"(unknown: {unknown}, missing: {missing}). Add or fix the "
            "'<!-- params: SECTION -->' ... '<!-- /params -->' markers."
        )
    return BLOCK.sub(lambda m: m.group(1) + table(models[m.group(2)]) + m.group(3), text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=PAGE)
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    args = parser.parse_args(argv)
    text = args.page.read_text()
    try:
        wanted = render(text)
    except ValueError as error:
        print(f"params_reference: error: {error}", file=sys.stderr)
        return 1
    if wanted == text:
        return 0
    if args.check:
        print(
            f"params_reference: error: the params reference in {args.page} is stale. Run "
            "`uv run python tools/params_reference.py` (or `uv run nox -s docs`).",
            file=sys.stderr,
        )
        return 1
    args.page.write_text(wanted)
    print(f"Rewrote the params reference in {args.page}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

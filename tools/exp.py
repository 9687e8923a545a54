"""Run ``dvc exp run`` in a project after checking every ``-S key=value`` against the params.

``dvc exp run -S train.epoch=3`` (a typo) stops in Hydra with "Key 'epoch' is
not in struct" and the advice to write ``+train.epoch=3``; that form adds the
key to ``params.yaml``, the stage then fails, and DVC leaves the file changed.
This checks each override with the section's typed model first (the same
``Params.parse`` the stage runs, so the same one-line message), writes a key
that the file leaves out in the ``+`` form DVC needs, and gives
``params.yaml`` its bytes back when the experiment fails, with the outputs
DVC removed before the failed stage that its cache cannot give back (those
marked ``cache: false``: metrics, figures' CSVs), committed or not, as they
were before the run. Input data missing from the workspace is checked out
from the DVC cache or pulled first, as ``nox -s repro`` does; when neither can
provide it, one line says so and how to get it, and nothing runs.

Usage: ``python tools/exp.py PROJECT_DIR [dvc exp run arguments]`` (what
``nox -s exp -- PROJECT ...`` runs). Exit status 2 for a bad override, 1 for
missing data, else that of ``dvc exp run``.
"""

from __future__ import annotations

import filecmp
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dvcrepo import skip_reason
from params_reference import SECTIONS

from celestial_data import ParamsError
from celestial_data.params import read_yaml

PROG = "celestial-exp"
SET_FLAGS = ("-S", "--set-param")
MODELS = {model.section: model for model in SECTIONS}


class OverrideError(Exception):
    """An ``-S`` value that names no param or gives it a bad value."""


def split_override(text: str) -> tuple[str, list[str], Any]:
    """``section``, the key path and the YAML value of ``[+]section.key[.inner]=value``."""
    path, equals, value = text.lstrip("+").partition("=")
    section, *keys = path.split(".")
    if not equals or not keys or not all(keys):
        raise OverrideError(
            f"-S takes SECTION.KEY=VALUE, e.g. -S train.epochs=3. Received: {text!r}"
        )
    if section not in MODELS:
        raise OverrideError(
            f"Unknown params section {section!r} in -S {text}. Accepted sections: "
            f"{', '.join(MODELS)}."
        )
    return section, keys, read_yaml(value) if value else None


def sweep(text: str) -> list[str] | None:
    """The values of a sweep DVC queues one experiment each for, or None for one value.

    DVC takes Hydra's sweeps: ``2,3``, ``choice(2,3)`` and ``range(START,STOP[,STEP])``
    (STOP left out). A comma inside brackets or quotes belongs to one value (a
    list such as ``[Mars,Moon]``).
    """
    call = re.fullmatch(r"\s*(choice|range)\((.*)\)\s*", text)
    parts = _top_level_split(call.group(2) if call else text)
    if call and call.group(1) == "range":
        numbers = [read_yaml(part) for part in parts]
        if not 2 <= len(numbers) <= 3 or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise OverrideError(f"range() takes START,STOP[,STEP] numbers. Received: {text!r}")
        start, stop, step = (*numbers, 1)[:3]
        if step == 0:
            raise OverrideError(f"range() needs a STEP other than 0. Received: {text!r}")
        count = max(0, math.ceil((stop - start) / step))
        return [str(start + i * step) for i in range(count)] or None
    return parts if call or len(parts) > 1 else None


def _top_level_split(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def _set(mapping: dict[str, Any], keys: list[str], value: Any) -> bool:
    """Set ``mapping[k1][k2]... = value``; whether the key was there before."""
    *outer, last = keys
    for key in outer:
        inner = mapping.get(key)
        mapping[key] = inner = dict(inner) if isinstance(inner, dict) else {}
        mapping = inner
    present = last in mapping
    mapping[last] = value
    return present


def rewrite(args: Sequence[str], document: dict[str, Any]) -> list[str]:
    """``args`` with each override checked, in the form DVC accepts for ``document``.

    Raises:
        OverrideError: If an override is malformed or its section refuses it.
    """
    changed = {name: dict(document.get(name) or {}) for name in MODELS}
    result, pending = [], False
    for arg in args:
        flag, _, inline = arg.partition("=")
        if pending or (flag == "--set-param" and inline):
            text = inline if not pending else arg
            section, keys, value = split_override(text)
            swept = sweep(text.partition("=")[2])
            values = [read_yaml(one) for one in swept] if swept else [value]
            present = _set(changed[section], keys, values[0])
            for one in values:  # each experiment of a sweep gets one of them
                _set(changed[section], keys, one)
                try:
                    MODELS[section].parse(changed[section], f"params {section}")
                except ParamsError as error:
                    raise OverrideError(str(error).splitlines()[0]) from None
            dotted = ".".join([section, *keys])
            arg = f"{'' if present else '+'}{dotted}={text.partition('=')[2]}"
            result.append(arg if pending else f"--set-param={arg}")
            pending = False
            continue
        pending = arg in SET_FLAGS
        result.append(arg)
    if pending:
        raise OverrideError("-S needs a value: -S SECTION.KEY=VALUE, e.g. -S train.epochs=3.")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Check the overrides, run the experiment, and restore ``params.yaml`` if it fails."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not Path(args[0]).is_dir():
        print(
            f"{PROG}: error: name a project folder first: PROJECT [-S key=value ...]",
            file=sys.stderr,
        )
        return 2
    project, options = Path(args[0]), args[1:]
    params = project / "params.yaml"
    original = params.read_bytes()
    try:
        command = rewrite(options, read_yaml(original) or {})
    except OverrideError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    dvc = Path(sys.executable).parent / "dvc"
    # A fresh clone lacks the pulled data: DVC would stop on "missing data 'source'".
    missing = skip_reason(project.resolve(), (str(dvc),))
    if missing:
        print(f"{PROG}: error: no experiment can run: {missing}.", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="celestial-exp-") as kept:
        saved = save_uncached_outputs(project, Path(kept))
        done = subprocess.run([str(dvc), "exp", "run", *command], cwd=project)
        if done.returncode != 0 and params.read_bytes() != original:
            # DVC writes the -S values into the workspace and leaves them there on failure.
            params.write_bytes(original)
            print(f"{PROG}: the experiment failed; {params} is as it was.", file=sys.stderr)
        if done.returncode != 0:
            # DVC removes a stage's outputs before running it; a failed stage
            # leaves them removed, and those it does not cache are nowhere else.
            restored = restore_outputs(project, Path(kept), saved)
            if restored:
                print(
                    f"{PROG}: the experiment failed; restored {', '.join(restored)} as they "
                    "were before it.",
                    file=sys.stderr,
                )
    return done.returncode


def uncached_outputs(project: Path) -> list[str]:
    """The outputs of ``project``'s stages marked ``cache: false``, relative to it."""
    pipeline = project / "dvc.yaml"
    try:
        stages = (read_yaml(pipeline.read_text()) or {}).get("stages") or {}
    except (OSError, ValueError):  # DVC says what is wrong with the file
        return []
    found = []
    for stage in stages.values() if isinstance(stages, dict) else ():
        for kind in ("outs", "metrics", "plots"):
            entries = stage.get(kind) or [] if isinstance(stage, dict) else []
            for entry in entries if isinstance(entries, list) else ():
                if isinstance(entry, dict) and len(entry) == 1:
                    path, options = next(iter(entry.items()))
                    if isinstance(options, dict) and options.get("cache") is False:
                        found.append(str(path))
    return found


def save_uncached_outputs(project: Path, kept: Path) -> list[str]:
    """Copy the ``cache: false`` outputs that exist into ``kept``; the paths copied."""
    saved = []
    for path in uncached_outputs(project):
        source = project / path
        if source.is_file():
            (kept / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, kept / path)
            saved.append(path)
        elif source.is_dir():
            shutil.copytree(source, kept / path)
            saved.append(path)
    return saved


def restore_outputs(project: Path, kept: Path, saved: list[str]) -> list[str]:
    """Put back the saved outputs a failed run removed or changed; the paths put back."""
    restored = []
    for path in saved:
        target, copy = project / path, kept / path
        if copy.is_file():
            if target.is_file() and filecmp.cmp(target, copy, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(copy, target)
        else:
            if target.is_dir() and not filecmp.dircmp(target, copy).diff_files:
                continue
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(copy, target)
        restored.append(path)
    return restored


if __name__ == "__main__":
    sys.exit(main())

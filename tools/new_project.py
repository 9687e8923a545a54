"""Make a project from the template: ``cookiecutter``, with a failed check said in one line.

The template's hooks check the answers (the slug, a project of that name
already there) and print one ``celestial-template: error: ...`` line. The
cookiecutter command then logs the hook's failure with a traceback from
inside cookiecutter, which says nothing more: that record is dropped here,
and everything else is cookiecutter's own command. An answer given on the
command line to a question with choices (``architecture=resnet``) is checked
here, before cookiecutter, which would refuse it with a traceback of its own.

Usage: ``python tools/new_project.py [cookiecutter arguments]`` (what ``nox -s
new`` runs, with the template and ``--output-dir projects``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from cookiecutter.cli import main
from cookiecutter.exceptions import FailedHookException


class HookFailure(logging.Filter):
    """Drop the record of a hook that failed: the hook has said why, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the record cookiecutter logs, with a traceback, when a hook fails."""
        return not (record.exc_info and isinstance(record.exc_info[1], FailedHookException))


def bad_choice(args: list[str]) -> str | None:
    """What is wrong with a ``key=value`` answer to a question with choices, or None.

    The template is the first argument that is a folder holding
    ``cookiecutter.json``; without one, cookiecutter says what is missing.
    """
    template = next((Path(a) for a in args if (Path(a) / "cookiecutter.json").is_file()), None)
    if template is None:
        return None
    questions = json.loads((template / "cookiecutter.json").read_text())
    for arg in args:
        key, sep, value = arg.partition("=")
        choices = questions.get(key)
        if sep and not arg.startswith("-") and isinstance(choices, list) and value not in choices:
            return (
                f"{key} must be one of {', '.join(map(str, choices))}. Received: {value!r}. "
                f"Pass {key}=<choice>, e.g. {key}={choices[0]}."
            )
    return None


if __name__ == "__main__":
    if problem := bad_choice(sys.argv[1:]):
        print(f"celestial-template: error: {problem}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("cookiecutter.hooks").addFilter(HookFailure())
    sys.exit(main(prog_name="cookiecutter"))

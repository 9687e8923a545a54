"""Make a project from the template: ``cookiecutter``, with a failed check said in one line.

The template's hooks check the answers (the slug, a project of that name
already there) and print one ``celestial-template: error: ...`` line. The
cookiecutter command then logs the hook's failure with a traceback from
inside cookiecutter, which says nothing more: that record is dropped here,
and everything else is cookiecutter's own command.

Usage: ``python tools/new_project.py [cookiecutter arguments]`` (what ``nox -s
new`` runs, with the template and ``--output-dir projects``).
"""

from __future__ import annotations

import logging
import sys

from cookiecutter.cli import main
from cookiecutter.exceptions import FailedHookException


class HookFailure(logging.Filter):
    """Drop the record of a hook that failed: the hook has said why, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the record cookiecutter logs, with a traceback, when a hook fails."""
        return not (record.exc_info and isinstance(record.exc_info[1], FailedHookException))


if __name__ == "__main__":
    logging.getLogger("cookiecutter.hooks").addFilter(HookFailure())
    sys.exit(main(prog_name="cookiecutter"))

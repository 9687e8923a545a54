"""Refuse to generate a project from answers that would make a broken one.

Cookiecutter runs this inside the freshly created project folder, before any
file is written, and deletes that folder when the hook fails (a folder that
existed before is kept as it was). Each problem is one line on stderr.

Cookiecutter creates that folder, parents included, from the template's folder
name before this hook can look at the slug; so the folder is named by
``__folder`` in ``cookiecutter.json``: the slug when it is one plain folder name
(``slugify`` leaves it as it is), else a throwaway ``.refused-slug-<uuid>``. A
slug such as ``ok/../../evil`` thus never creates ``ok/`` on its way to being
refused here.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | jsonify }}""")
SLUG = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_SLUG = 48


def problem() -> str | None:
    """The first thing wrong with the answers, or None."""
    slug = str(ANSWERS["slug"])
    if not SLUG.fullmatch(slug) or len(slug) > MAX_SLUG:
        return (
            f"slug must be kebab-case (lowercase letters and digits in words joined by '-', "
            f"starting with a letter, at most {MAX_SLUG} characters). Received: {slug!r}. "
            "Pass slug=<name>, e.g. slug=my-bodies."
        )
    existing = sorted(path.name for path in Path.cwd().iterdir())
    if existing:
        return (
            f"project {slug!r} already exists at {Path.cwd()} (it holds "
            f"{', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}). Choose another "
            "slug, or roll template changes into it with 'cruft update' from that folder."
        )
    for key, low, high in (("image_size", 4, 1024), ("epochs", 1, 10_000)):
        value = str(ANSWERS[key])
        if not value.isdigit() or not low <= int(value) <= high:
            return f"{key} must be a whole number from {low} to {high}. Received: {value!r}"
    return None


def main() -> int:
    """Print the problem, if any, and return the exit status."""
    found = problem()
    if found:
        print(f"celestial-template: error: {found}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

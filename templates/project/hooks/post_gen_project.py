"""Record the answers in ``.cruft.json`` and print the next steps.

``.cruft.json`` is cruft's record of the template (repository, folder, commit)
and of the answers, so that ``cruft diff`` and ``cruft update`` run from the
project folder can roll template changes into the project, and ``nox -s
template`` can check that the project still matches its template. When cruft
itself renders the template (its context carries ``_commit``), cruft writes
that file and this hook leaves it alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | jsonify }}""")
# Keys cookiecutter adds that describe one machine, not the project.
MACHINE_KEYS = {"_output_dir", "_repo_dir", "_checkout", "_template", "_commit"}


def git(folder: Path, *args: str) -> str | None:
    """Output of a git command in ``folder``, or None when it fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def template_folder(project: Path) -> Path | None:
    """The template folder this project was rendered from, absolute."""
    given = Path(str(ANSWERS.get("_repo_dir", "")))
    if given.is_absolute():
        candidates = [given]
    else:
        # Relative to the folder cookiecutter was started from, which this
        # process cannot know: most likely the root of the repository the
        # project is generated in, else the shell's folder.
        top = git(project, "rev-parse", "--show-toplevel")
        candidates = [
            *([Path(top) / given] if top else []),
            Path(os.environ.get("PWD", ".")) / given,
        ]
    return next((c.resolve() for c in candidates if (c / "cookiecutter.json").is_file()), None)


def answer_order(template: Path | None) -> list[str]:
    """The answers' keys in the order of ``cookiecutter.json``, as cruft records them.

    cookiecutter hands the hook its answers sorted; written so, the first
    ``cruft update`` would rewrite every line of ``.cruft.json``.
    """
    declared: list[str] = []
    if template is not None:
        declared = list(json.loads((template / "cookiecutter.json").read_text()))
    ordered = [key for key in declared if key in ANSWERS]
    return ordered + sorted(key for key in ANSWERS if key not in ordered)


def cruft_state(project: Path, template: Path | None) -> dict:
    """The content of ``.cruft.json`` for ``project``, as ``cruft create`` writes it."""
    top = git(template, "rev-parse", "--show-toplevel") if template else None
    commit = git(template, "rev-parse", "HEAD") if template else None
    if top:
        # Relative, so that the record holds in every clone: cruft clones this
        # path, and is run from the project folder.
        url = os.path.relpath(top, project)
        directory = Path(os.path.relpath(template, top)).as_posix()
    else:
        url, directory = (str(template) if template else None), None
    context = {k: ANSWERS[k] for k in answer_order(template) if k not in MACHINE_KEYS}
    context.update({"_template": url, "_commit": commit})
    return {
        "template": url,
        "commit": commit,
        "checkout": None,
        "context": {"cookiecutter": context},
        "directory": directory,
    }


def main() -> None:
    """Write ``.cruft.json`` (unless cruft renders) and print the next steps."""
    project = Path.cwd()
    if "_commit" not in ANSWERS:
        state = cruft_state(project, template_folder(project))
        text = json.dumps(state, ensure_ascii=False, indent=2, separators=(",", ": "))
        (project / ".cruft.json").write_text(text + "\n")
        first = (
            "Put the images in data/raw/<Class>/ and track them: uv run dvc add data/raw"
            if ANSWERS["data_source"] == "folder"
            else "The synth stage renders the images: nothing to download."
        )
        if os.environ.get("CELESTIAL_TEMPLATE_QUIET"):
            return
        print(
            f"Created {project.name}. {first}\n"
            f"Then: cd {os.path.relpath(project, os.environ.get('PWD', '.'))} && uv run dvc repro "
            "(see README.md)."
        )


if __name__ == "__main__":
    main()

"""The command-line runner every celestial command shares.

Each package's ``cli.py`` builds an argparse parser whose sub-commands set
their handler (``set_defaults(run=handler)``, a function of the parsed
arguments that returns the exit status) and hands it to `run_command`, so every
command reports a problem the same way: one line, ``PROG: error: message``,
exit status 2 for bad params (and, through argparse, bad usage), 1 for the
package's other errors, 130 when interrupted.

A command that is its process's (run with the process's arguments) ends by
freezing the garbage collector's objects: Python's last collection at exit
would otherwise walk every object Keras, JAX and Matplotlib made, 0.4 to
0.6 s of each pipeline stage. Objects alive at exit are not freed either way.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from celestial_data.errors import DataError, ParamsError

__all__ = ["counted", "output_folder", "run_command", "say"]


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, made plural unless one: ``1 image``, ``3 images``, ``2 classes``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def output_folder(path: str | Path, role: str = "output folder") -> Path:
    """``path`` as a folder to write into, created with its parents if missing.

    Raises:
        DataError: If ``path`` is a file, or cannot be created; the message
            names it and what to do.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(
            f"The {role} {path} is a file. Name a folder (created if missing) or move the file."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"Cannot create the {role} {path}: {error.strerror}. Name a folder you can write to."
        ) from None
    return path


def say(prog: str, kind: str, message: object) -> None:
    """Print ``PROG: KIND: message`` to standard error (``kind``: error, warning)."""
    print(f"{prog}: {kind}: {message}", file=sys.stderr)


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    expected: tuple[type[Exception], ...],
) -> int:
    """Parse ``argv``, run the chosen handler and return the exit status.

    Args:
        parser: The command's parser; each sub-command sets ``run``.
        argv: The arguments (None: the process's, and the process ends with
            the command: see the module's docstring).
        expected: The errors the package raises on purpose (reported in one
            line, exit 1), as are the system's refusals (``OSError``: a full
            disk, a folder not writable); anything else is a bug and keeps
            its traceback.
    """
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ParamsError as error:
        say(parser.prog, "error", error)
        return 2
    except expected as error:
        say(parser.prog, "error", error)
        return 1
    except BrokenPipeError:  # the reader of the output left (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # the system refused a file: its message names it
        say(parser.prog, "error", error)
        return 1
    except KeyboardInterrupt:
        say(parser.prog, "error", "interrupted")
        return 130
    finally:
        if argv is None:
            gc.freeze()

"""Read prediction logs: the server's JSON lines, one `PredictionRecord` per answer.

A log is a file, or a folder whose ``*.jsonl`` files are read in name order
(``celestial-serve --log-dir``: ``predictions.jsonl`` and its rotated files;
sub-folders such as ``review/`` are not read). A process killed while writing
can leave the last line of a file cut short: that line is skipped with a
warning. Any other line that is not a record is an error naming the file and
the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celestial_eval.errors import LogError, MissingInputError
from celestial_models.prediction_log import PredictionRecord, RecordError

__all__ = ["PredictionLog", "log_files", "read_log"]

LOG_PATTERN = "*.jsonl"


@dataclass
class PredictionLog:
    """The records of one or more log files, in file and line order."""

    records: list[PredictionRecord] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def log_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each file given, and each folder's ``*.jsonl`` sorted by name.

    Raises:
        MissingInputError: If a path does not exist or a folder holds no ``*.jsonl``.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.glob(LOG_PATTERN) if p.is_file())
            if not found:
                raise MissingInputError(
                    f"Log folder {path} holds no prediction log ({LOG_PATTERN}). Pass the "
                    "folder the server writes to (celestial-serve --log-dir) or a log file."
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise MissingInputError(
                f"Prediction log {path} not found. Pass a log file or the folder the server "
                "writes to (celestial-serve --log-dir)."
            )
    return files


def read_file(path: Path, log: PredictionLog) -> None:
    """Append the records of one file to ``log`` (see the module docstring).

    Raises:
        LogError: If a line other than a cut-short last one is not a record.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise MissingInputError(f"Cannot read prediction log {path}: {error}.") from None
    lines = data.split(b"\n")
    # A file written to the end finishes with a newline: an empty last piece.
    cut_short = lines.pop() if lines else b""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            log.records.append(PredictionRecord.from_json(line))
        except RecordError as error:
            raise LogError(
                f"{path}:{number}: not a prediction record ({error}). The log is corrupt: "
                "remove or repair that line, or leave the file out."
            ) from None
    if cut_short.strip():
        try:
            log.records.append(PredictionRecord.from_json(cut_short))
        except RecordError:
            log.warnings.append(
                f"{path}:{len(lines) + 1}: last line cut short (no newline, not a record), "
                "as a server stopped while writing leaves it; skipped."
            )
    log.files.append(path)


def read_log(paths: Sequence[str | Path]) -> PredictionLog:
    """Read every record of the logs at ``paths`` (files or folders).

    Raises:
        MissingInputError: If a path is missing or a folder holds no log.
        LogError: If a line is corrupt or the logs hold no record.
    """
    log = PredictionLog()
    files = log_files(paths)
    for path in files:
        read_file(path, log)
    if not log.records:
        names = ", ".join(str(p) for p in files[:3]) + (", ..." if len(files) > 3 else "")
        raise LogError(
            f"The prediction log holds no record ({names}). Point it at a log the server "
            "has written answers to (celestial-serve --log-dir)."
        )
    return log

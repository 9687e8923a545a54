"""Label Studio round trip: review images out as tasks, labelled images back into ``raw/``.

A served model keeps the images worth a second look in its review folder
(``celestial-serve --log-dir DIR`` writes ``DIR/review/``): for each image,
``<digest>.<ext>`` (the uploaded bytes, named by their SHA-256) and
``<digest>.json`` (its `PredictionRecord`).

`export_tasks` turns that folder into Label Studio's task import JSON, the
model's answer as a pre-annotation of each task, and `labelling_config` into
the labelling interface: one ``Choices`` of the model's classes plus
``New class``, which shows a ``TextArea`` to type the new class's name (a
``Choices`` cannot gain values while labelling). Label Studio reaches the
images through its local-files serving: ``data.image`` is
``/data/local-files/?d=<path under the document root>``.

`read_export` reads Label Studio's JSON export back and maps each labelled
task to its review image; `celestial_data.ingest.add_images` then adds them
to the raw folder, all or nothing.

This lives in celestial-eval rather than celestial-data because the export
reads `PredictionRecord`, which celestial-models defines, and data imports
none of the other packages; the part that writes into ``raw/`` is
celestial-data's `add_images`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

from celestial_data.dataset import is_image_name
from celestial_data.ingest import Candidate
from celestial_data.params import read_yaml
from celestial_eval.errors import EvalError, MissingInputError
from celestial_models.prediction_log import PredictionRecord, RecordError

__all__ = [
    "CHOICES",
    "IMAGE",
    "IMPORTED",
    "LOCAL_FILES",
    "NEW_CLASS",
    "NEW_CLASS_TEXT",
    "ExportRead",
    "LabellingError",
    "ReviewImage",
    "archive",
    "export_tasks",
    "labelling_config",
    "read_export",
    "read_review",
    "stage_writing",
]

#: Names of the labelling config's tags, as the tasks and exports refer to them.
IMAGE = "image"
CHOICES = "label"
NEW_CLASS_TEXT = "new_class"
#: The choice that asks for a typed class name instead.
NEW_CLASS = "New class"
#: The review folder's sub-folder of images `label import` has dealt with.
IMPORTED = "imported"
#: Label Studio's URL prefix for files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT.
LOCAL_FILES = "/data/local-files/?d="
_DIGEST = re.compile(r"[0-9a-f]{64}")
_LISTED = 10


class LabellingError(EvalError):
    """A review folder or a Label Studio export that cannot be used as it is."""


@dataclass(frozen=True)
class ReviewImage:
    """One image of a review folder and the model's answer to it."""

    path: Path
    record: PredictionRecord

    @property
    def digest(self) -> str:
        """SHA-256 of the image's bytes (its file name's stem)."""
        return self.path.stem


def _listing(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:_LISTED])
    more = len(lines) - _LISTED
    return shown + (f"; ... ({more} more)" if more > 0 else "")


def read_review(review: Path) -> tuple[list[ReviewImage], list[str]]:
    """The images of a review folder with their records, by digest.

    Returns:
        The images that have a record, and the names of images without one
        (still being written, or their record was removed), which are left out.

    Raises:
        MissingInputError: If the folder does not exist.
        LabellingError: If a record is unreadable or names no image.
    """
    if not review.is_dir():
        raise MissingInputError(
            f"Review folder {review} not found. It is DIR/review of a server started with "
            "'celestial-serve --log-dir DIR'."
        )
    if (review / "review").is_dir() and any(review.glob("predictions-*.jsonl")):
        raise MissingInputError(
            f"{review} is a server's log folder: its review folder is {review / 'review'}."
        )
    images: dict[str, Path] = {}
    records: dict[str, Path] = {}
    for path in sorted(review.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            records[path.stem] = path
        elif is_image_name(path.name):
            images[path.stem] = path
    found: list[ReviewImage] = []
    problems: list[str] = []
    for stem, record_path in records.items():
        if stem not in images:
            problems.append(f"{record_path.name} has no image {stem}.<ext> beside it")
            continue
        try:
            record = PredictionRecord.from_json(record_path.read_text().strip())
        except (OSError, RecordError) as error:
            problems.append(f"{record_path.name}: {error}")
            continue
        found.append(ReviewImage(images[stem], record))
    if problems:
        raise LabellingError(
            f"Review folder {review} has {len(problems)} unusable record(s): "
            f"{_listing(problems)}. Remove them (with their images) and export again."
        )
    orphans = sorted(images[stem].name for stem in images.keys() - records.keys())
    return found, orphans


def _image_url(path: Path, document_root: Path) -> str:
    try:
        relative = path.resolve().relative_to(document_root.resolve())
    except ValueError:
        raise LabellingError(
            f"The review image {path} is not under the document root {document_root}. "
            "Give --document-root a folder that holds the review folder (the value of "
            "Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."
        ) from None
    return LOCAL_FILES + quote(relative.as_posix())


def _answer_text(record: PredictionRecord) -> str:
    closest = ", ".join(f"{label} {p:.0%}" for label, p in record.top_k)
    if record.unknown:
        return f"Model answer: unknown (closest: {closest})"
    return f"Model answer: {record.label} ({closest})"


def export_tasks(
    images: Sequence[ReviewImage], document_root: Path, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Label Studio tasks for review images, each pre-annotated with the model's answer.

    Args:
        images: What `read_review` found.
        document_root: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: a
            folder holding the review folder.
        classes: The choices of the labelling config; an answer of
            ``unknown`` is pre-annotated as `NEW_CLASS`.

    Returns:
        A list for Label Studio's task import: ``data`` holds ``image`` (a
        local-files URL), ``digest`` and ``answer`` (a line shown to the
        labeller); ``predictions`` holds one choice, with the top
        probability as ``score`` and the model's hash as ``model_version``.

    Raises:
        LabellingError: If an answer is not one of ``classes``.
    """
    tasks = []
    known = set(classes)
    for image in images:
        record = image.record
        choice = NEW_CLASS if record.unknown or record.label == "unknown" else record.label
        if choice != NEW_CLASS and choice not in known:
            raise LabellingError(
                f"{image.path.name}: the model answered {choice!r}, which is not one of the "
                f"classes {sorted(known)}. Export with --model pointing at the model that "
                "answered."
            )
        result = {
            "from_name": CHOICES,
            "to_name": IMAGE,
            "type": "choices",
            "value": {"choices": [choice]},
        }
        tasks.append(
            {
                "data": {
                    IMAGE: _image_url(image.path, document_root),
                    "digest": image.digest,
                    "answer": _answer_text(record),
                },
                "predictions": [
                    {
                        "model_version": record.model,
                        "score": round(record.confidence, 6),
                        "result": [result],
                    }
                ],
            }
        )
    return tasks


def labelling_config(classes: Sequence[str]) -> str:
    """Label Studio's labelling config: the image, the model's answer, the classes.

    ``New class`` shows a one-line text box for the name of a class the model
    does not know (a ``Choices`` tag cannot gain values while labelling; this
    is the conditional ``visibleWhen`` of Label Studio's docs).
    """
    if NEW_CLASS in classes:
        raise LabellingError(
            f"A class is named {NEW_CLASS!r}, the choice that asks for a new class's name. "
            "Rename that class."
        )
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return f"""<View>
  <Image name="{IMAGE}" value="${IMAGE}"/>
  <Header value="$answer" size="5"/>
  <Choices name="{CHOICES}" toName="{IMAGE}" choice="single" showInline="true" required="true">
{choices}
    <Choice value={quoteattr(NEW_CLASS)}/>
  </Choices>
  <View visibleWhen="choice-selected" whenTagName="{CHOICES}" \
whenChoiceValue={quoteattr(NEW_CLASS)}>
    <Header value="Name of the new class" size="6"/>
    <TextArea name="{NEW_CLASS_TEXT}" toName="{IMAGE}" rows="1" maxSubmissions="1" \
editable="true"/>
  </View>
</View>
"""


@dataclass
class ExportRead:
    """The labelled images of a Label Studio export, and what was skipped."""

    candidates: list[Candidate] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    """Tasks with no annotation (never labelled, or the annotation was emptied)."""
    cancelled: list[str] = field(default_factory=list)
    """Tasks whose every annotation was skipped (cancelled) in Label Studio."""
    gone: list[str] = field(default_factory=list)
    """Labelled tasks whose image is no longer in the review folder (the server let it go)."""
    done: list[Path] = field(default_factory=list)
    """The review folder's images of the labelled and cancelled tasks, to `archive`."""


def _task_name(task: dict[str, Any], index: int) -> str:
    return f"task {task['id']}" if "id" in task else f"task #{index + 1} of the export"


def _file_name(image: str) -> str:
    """The file name an image reference ends with (a local-files URL, a URL, a path)."""
    parsed = urlparse(image)
    query = parse_qs(parsed.query)
    path = query["d"][0] if "d" in query else unquote(parsed.path)
    return path.rstrip("/").rsplit("/", 1)[-1]


def _annotation_class(annotation: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(class, problem)`` of one annotation; both None if it holds no choice."""
    choices: list[str] = []
    texts: list[str] = []
    for item in annotation.get("result") or []:
        if not isinstance(item, dict):
            continue
        if item.get("from_name") == CHOICES and item.get("type") == "choices":
            found, problem = _strings(item, "choices")
            choices += found
        elif item.get("from_name") == NEW_CLASS_TEXT and item.get("type") == "textarea":
            found, problem = _strings(item, "text")
            texts += found
        else:
            continue
        if problem:
            return None, problem
    if not choices:
        return None, None
    if len(choices) > 1:
        return None, f"has several choices {choices}"
    if choices[0] != NEW_CLASS:
        if any(t.strip() for t in texts):
            return None, (f"chose {choices[0]!r} but also typed a new class name {texts}: keep one")
        return choices[0], None
    typed = [t.strip() for t in texts if t.strip()]
    if len(typed) != 1:
        return None, f"chose {NEW_CLASS!r} but typed {len(typed)} class names (one expected)"
    return typed[0], None


def _strings(item: dict[str, Any], key: str) -> tuple[list[str], str | None]:
    """``item["value"][key]``, a list of strings as Label Studio writes it, or the problem."""
    value = item.get("value")
    if not value:
        return [], None
    found = value.get(key) if isinstance(value, dict) else value
    if not isinstance(value, dict) or not isinstance(found, list | None):
        return [], (
            f"has a {item.get('from_name')} result whose value is {value!r:.60}, not "
            f'{{"{key}": ["..."]}} as Label Studio writes it'
        )
    found = found or []
    wrong = [entry for entry in found if not isinstance(entry, str)]
    if wrong:
        return [], f"has {key} that are not names: {wrong!r:.60}"
    return found, None


def _task_class(task: dict[str, Any]) -> tuple[str | None, str, str | None]:
    """``(class, status, problem)``: status is labelled, unlabelled or cancelled."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    kept = [a for a in annotations if not a.get("was_cancelled")]
    if annotations and not kept:
        return None, "cancelled", None
    found: set[str] = set()
    for annotation in kept:
        label, problem = _annotation_class(annotation)
        if problem:
            return None, "labelled", f"its annotation {annotation.get('id', '')} {problem}"
        if label is not None:
            found.add(label)
    if not found:
        return None, "unlabelled", None
    if len(found) > 1:
        return (
            None,
            "labelled",
            (f"its annotations disagree ({', '.join(sorted(found))}); keep one in Label Studio"),
        )
    return found.pop(), "labelled", None


def _load_export(path: Path) -> list[Any]:
    if not path.is_file():
        state = "is a folder, not a file" if path.is_dir() else "not found"
        raise MissingInputError(
            f"Label Studio export {path} {state}. Export the project as JSON "
            "(Export > JSON, or GET /api/projects/<id>/export?exportType=JSON)."
        )
    try:
        tasks = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LabellingError(f"{path} is not readable JSON ({error}).") from None
    if not isinstance(tasks, list) or not all(
        isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks
    ):
        raise LabellingError(
            f"{path} is not a Label Studio JSON export: expected a list of tasks, each with "
            "'data' and 'annotations'. Export the project as JSON (not JSON-MIN or CSV)."
        )
    if tasks and not any("annotations" in task for task in tasks):
        # Label Studio's export gives every task the key, labelled or not.
        raise LabellingError(
            f"{path} holds tasks but no annotations: a task list to import into Label Studio "
            "(as the tasks.json 'label export' writes), not an export of labelled tasks. "
            "Label the tasks in Label Studio, then export the project as JSON."
        )
    return tasks


def read_export(path: Path, review: Path) -> ExportRead:
    """The labelled images of a Label Studio JSON export, mapped to the review folder.

    A task's image is the file its ``data.image`` names, looked up in
    ``review`` by file name (then in its `IMPORTED` sub-folder: imported
    before); its class is the annotation's choice, or the typed name when the
    choice is `NEW_CLASS`. Tasks without an annotation and tasks whose
    annotations were all cancelled (skipped) are counted, not added; so are
    labelled tasks whose image is no longer there (``gone``: the server lets
    its oldest kept images go past its cap).

    Raises:
        MissingInputError: If the export does not exist.
        LabellingError: If the export is not Label Studio JSON, a task's
            image changed bytes, a task has contradictory annotations, or no
            labelled task's image is in ``review`` (the wrong folder). Every
            such task is listed.
    """
    tasks = _load_export(path)
    read = ExportRead()
    problems: list[str] = []
    for index, task in enumerate(tasks):
        name = _task_name(task, index)
        label, status, problem = _task_class(task)
        if problem:
            problems.append(f"{name}: {problem}")
            continue
        image = task["data"].get(IMAGE)
        file_name = _file_name(image) if isinstance(image, str) else ""
        if status == "cancelled":
            read.cancelled.append(name)
            if file_name and (review / file_name).is_file():
                read.done.append(review / file_name)
            continue
        if label is None:
            read.unlabelled.append(name)
            continue
        if not isinstance(image, str) or not image:
            problems.append(f"{name}: data.{IMAGE} is missing")
            continue
        source = review / file_name
        if file_name and not source.is_file() and (review / IMPORTED / file_name).is_file():
            source = review / IMPORTED / file_name  # imported before: its duplicate is skipped
        elif not file_name or not source.is_file():
            read.gone.append(name)
            continue
        else:
            read.done.append(source)
        stem = source.stem
        if _DIGEST.fullmatch(stem):
            with open(source, "rb") as stream:
                actual = hashlib.file_digest(stream, "sha256").hexdigest()
            if actual != stem:
                problems.append(f"{name}: {source} no longer holds the image of that name")
                continue
        read.candidates.append(Candidate(source, label, file_name, name))
    if read.gone and not read.candidates and not problems:
        problems.append(
            f"none of the {len(read.gone)} labelled tasks' images is in {review} "
            f"({_listing(read.gone)})"
        )
    if problems:
        raise LabellingError(
            f"Cannot import {path}: {len(problems)} task(s) are unusable: {_listing(problems)}. "
            "Nothing was written. Give the review folder the tasks were exported from "
            "(--review), or fix the tasks in Label Studio and export again."
        )
    return read


def archive(review: Path, images: Sequence[Path]) -> int:
    """Move reviewed ``images`` of ``review``, with their records, into ``review/imported/``.

    What `label import` has dealt with leaves the review folder, so that the
    next `export_tasks` offers only images never labelled; it is kept, not
    deleted, and an export naming it still imports (as already present).
    Neither `read_review` nor the server's cap counts that sub-folder.

    Returns:
        How many images were moved.
    """
    target = review / IMPORTED
    moved = 0
    for image in images:
        if image.parent != review or not image.is_file():
            continue
        target.mkdir(exist_ok=True)
        for path in (image, image.with_suffix(".json")):
            with contextlib.suppress(FileNotFoundError):  # a record removed by hand
                os.replace(path, target / path.name)
        moved += 1
    return moved


def stage_writing(raw: Path) -> tuple[Path, str] | None:
    """The ``dvc.yaml`` and stage whose outputs hold ``raw``, if a pipeline writes it.

    Looks in the nearest ``dvc.yaml`` at or above ``raw``'s parent: a folder a
    stage writes (a project's rendered ``data/raw``) is replaced by the next
    ``dvc repro``, so images added to it would be lost.
    """
    target = raw.resolve()
    for folder in target.parents:
        pipeline = folder / "dvc.yaml"
        if not pipeline.is_file():
            continue
        try:
            stages = (read_yaml(pipeline.read_text()) or {}).get("stages") or {}
        except Exception:  # not ours to check: DVC says what is wrong with it
            return None
        for name, stage in stages.items() if isinstance(stages, dict) else ():
            outs = stage.get("outs") or [] if isinstance(stage, dict) else []
            for out in outs:
                path = next(iter(out)) if isinstance(out, dict) else out
                written = (folder / str(path)).resolve()
                if target == written or written in target.parents:
                    return pipeline, str(name)
        return None
    return None

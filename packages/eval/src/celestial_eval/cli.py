"""Command line of celestial-eval: evaluate, compare projects, write reports, watch drift."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from celestial_data.command import counted, output_folder, run_command, say
from celestial_data.dataset import listing
from celestial_data.errors import DataError
from celestial_data.ingest import add_images
from celestial_eval.drift import OUTPUTS as DRIFT_OUTPUTS
from celestial_eval.drift import DriftParams, markdown_summary, run_drift, summary_lines
from celestial_eval.errors import EvalError, MissingInputError
from celestial_eval.evaluate import EvaluateParams, evaluate
from celestial_eval.labelling import (
    IMPORTED,
    archive,
    export_tasks,
    labelling_config,
    read_export,
    read_review,
    stage_writing,
)
from celestial_eval.leaderboard import leaderboard, to_json, to_markdown
from celestial_eval.rejection import RejectionParams, rejection_stage
from celestial_eval.report import write_report
from celestial_models.errors import ModelError
from celestial_models.model_dir import read_metadata

PROG = "celestial-eval"


def _stage_arguments(
    parser: argparse.ArgumentParser, output: str, metavar: str, section: str
) -> None:
    """Add a pipeline stage's arguments: MODEL_DIR PREPARED <output> [--params]."""
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    parser.add_argument("prepared", type=Path, metavar="PREPARED")
    parser.add_argument(output, type=Path, metavar=metavar)
    parser.add_argument("--params", type=Path, help=f"params.yaml whose '{section}' section to use")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``celestial-eval``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate_cmd = commands.add_parser(
        "evaluate",
        help="measure a trained model on held-out images; write metrics and plots",
        description="Measure MODEL_DIR on the test split of PREPARED (the validation split "
        "when there is no test split) and write metrics.json, confusion.csv, history.csv, "
        "confusion.png, history.png, preview.png and misclassified.csv into OUT_DIR.",
    )
    _stage_arguments(evaluate_cmd, "out_dir", "OUT_DIR", "evaluate")
    evaluate_cmd.set_defaults(run=_evaluate)

    rejection_cmd = commands.add_parser(
        "rejection",
        help="leave-one-class-out: how well unseen classes are answered 'unknown'",
        description="For each class of PREPARED (or those of params rejection.classes), "
        "train a model without it (or without it and others: params "
        "rejection.classes_per_model), as MODEL_DIR was trained and calibrated (its recorded "
        "train and ood params), and measure how its images are "
        "told from the known classes' held-out images: AUROC of every unknown-image score "
        "and the share rejected at the calibrated threshold. Writes the averages and the "
        "per-class figures to OUTPUT (JSON). Trainings are long: a separate stage.",
    )
    _stage_arguments(rejection_cmd, "output", "OUTPUT", "rejection")
    rejection_cmd.set_defaults(run=_rejection)

    leaderboard_cmd = commands.add_parser(
        "leaderboard",
        help="one row of headline metrics per project",
        description="Print the headline metrics of every project folder (one holding a "
        "dvc.yaml) under PROJECTS_DIR; projects without metrics are listed as such.",
    )
    leaderboard_cmd.add_argument(
        "projects_dir", type=Path, nargs="?", default=Path("projects"), metavar="PROJECTS_DIR"
    )
    leaderboard_cmd.add_argument("--format", choices=("markdown", "json"), default="markdown")
    leaderboard_cmd.set_defaults(run=_leaderboard)

    report_cmd = commands.add_parser(
        "report",
        help="a self-contained HTML report of a project's metrics and plots",
        description="Write an HTML page of PROJECT_DIR's metrics and plots that opens with "
        "no network: images are embedded and charts are inline SVG.",
    )
    report_cmd.add_argument("project_dir", type=Path, metavar="PROJECT_DIR")
    report_cmd.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="where to write the page (default: PROJECT_DIR/report.html)",
    )
    report_cmd.set_defaults(run=_report)

    drift_cmd = commands.add_parser(
        "drift",
        help="compare a served model's prediction log with the model's reference",
        description="Compare the answers logged in LOG (files, or folders whose *.jsonl are "
        "read in name order) with MODEL_DIR/reference.jsonl, the model's validation split: "
        "class mix, unknown rate, confidence, unknown-image score and image features. "
        "Only the records of that model count. Writes drift.json and drift.html into "
        "OUT_DIR. Exit status: 0 no drift, 1 drift found, 2 bad input.",
    )
    drift_cmd.add_argument("logs", type=Path, nargs="+", metavar="LOG")
    drift_cmd.add_argument(
        "--model", type=Path, required=True, metavar="MODEL_DIR", help="the served model folder"
    )
    drift_cmd.add_argument(
        "--out", type=Path, required=True, metavar="OUT_DIR", help="where to write the outputs"
    )
    drift_cmd.add_argument("--params", type=Path, help="params.yaml whose 'drift' section to use")
    drift_cmd.add_argument(
        "--summary",
        type=Path,
        metavar="FILE",
        help="also append the verdict as Markdown to FILE (e.g. $GITHUB_STEP_SUMMARY)",
    )
    drift_cmd.set_defaults(run=_drift)
    _label_commands(commands)
    return parser


def _label_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``label export`` and ``label import``: the Label Studio round trip."""
    label_cmd = commands.add_parser(
        "label",
        help="Label Studio round trip: review images out as tasks, labelled images into raw/",
        description="Export a served model's review folder as Label Studio tasks, and import "
        "Label Studio's JSON export back into a project's raw folder.",
    )
    label_commands = label_cmd.add_subparsers(dest="label_command", required=True, metavar="STEP")
    export_cmd = label_commands.add_parser(
        "export",
        help="write Label Studio tasks (with the model's answers) and a labelling config",
        description="Write OUT/tasks.json (Label Studio's task import JSON: each review image "
        "with the model's answer as a pre-annotation) and OUT/config.xml (the labelling "
        "config: the model's classes and 'New class' with a box for its name). Label "
        "Studio reaches the images through its local-files serving: start it with "
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<the document root>.",
    )
    export_cmd.add_argument(
        "review", type=Path, metavar="REVIEW_DIR", help="the review folder (LOG_DIR/review)"
    )
    export_cmd.add_argument(
        "--out", type=Path, required=True, metavar="OUT", help="folder to write the files into"
    )
    export_cmd.add_argument(
        "--document-root",
        type=Path,
        metavar="DIR",
        help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, a folder holding "
        "REVIEW_DIR (default: REVIEW_DIR's parent, the log folder)",
    )
    export_cmd.add_argument(
        "--model",
        type=Path,
        metavar="MODEL_DIR",
        help="the model folder whose classes to offer (default: the classes the records name)",
    )
    export_cmd.set_defaults(run=_label_export)
    import_cmd = label_commands.add_parser(
        "import",
        help="add the images labelled in Label Studio to a raw folder (all or nothing)",
        description="Read EXPORT_JSON (Label Studio's JSON export of the project), find each "
        "labelled task's image in REVIEW_DIR and copy it to RAW/<Class>/<file>. New classes "
        "get a folder (one whose name is close to an existing class's is refused as a typo "
        "unless confirmed with --new-class); images already in RAW (same bytes or pixels) "
        "are skipped; no file is replaced; unlabelled and skipped tasks are counted. Every "
        "task and class name is checked first: on any problem nothing is written.",
    )
    import_cmd.add_argument("export", type=Path, metavar="EXPORT_JSON")
    import_cmd.add_argument(
        "--review", type=Path, required=True, metavar="REVIEW_DIR", help="the review folder"
    )
    import_cmd.add_argument(
        "--raw", type=Path, required=True, metavar="RAW", help="the project's raw folder"
    )
    import_cmd.add_argument(
        "--new-class",
        action="append",
        default=[],
        metavar="NAME",
        help="confirm NAME as a new class though it is close to an existing class's name "
        "(taken for a typo otherwise); repeat for several",
    )
    import_cmd.add_argument(
        "--dry-run", action="store_true", help="check and report what would be added; write nothing"
    )
    import_cmd.set_defaults(run=_label_import)


# The command modules load Keras and matplotlib only when a command runs, so
# importing them here keeps ``--help`` instant.
def _evaluate(args: argparse.Namespace) -> int:
    params = EvaluateParams.load(args.params)
    metrics = evaluate(args.model_dir, args.prepared, args.out_dir, params)
    print(
        f"{metrics['split']} split: accuracy {metrics['accuracy']:.4f}, loss "
        f"{metrics['loss']:.4f}, {counted(metrics['images'], 'image')} -> {args.out_dir}"
    )
    varied = metrics.get("varied")
    if varied and varied["images"]:
        accepted = f", {varied['accepted']:.4f} accepted" if "accepted" in varied else ""
        print(
            f"{varied['images']} varied copies of its pictures: accuracy "
            f"{varied['accuracy']:.4f}{accepted}"
        )
    for warning in metrics["warnings"]:
        say(PROG, "warning", warning)
    return 0


def _rejection(args: argparse.Namespace) -> int:
    params = RejectionParams.load(args.params)
    # A process per core when worth it: this command is its own process's main.
    figures = rejection_stage(
        args.model_dir, args.prepared, args.output, params, workers="auto", progress=True
    )
    for warning in figures.get("warnings", []):
        say(PROG, "warning", warning)
    if figures["held_out_classes"]:
        print(
            f"{counted(figures['held_out_classes'], 'class')} held out, score {figures['score']}: "
            f"AUROC {figures['auroc']:.4f}, rejected {figures['rejected']:.3f}, known "
            f"accepted {figures['accepted']:.3f} -> {args.output}"
        )
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    rows = leaderboard(args.projects_dir)
    print(to_json(rows) if args.format == "json" else to_markdown(rows), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    print(write_report(args.project_dir, args.output))
    return 0


def _drift(args: argparse.Namespace) -> int:
    # Exit 1 means drift, so every bad input is 2 here, as usage and params errors are.
    try:
        params = DriftParams.load(args.params)
        result = run_drift(args.logs, args.model, args.out, params)
        if args.summary:  # before printing: a reader gone (`| head`) must not lose it
            with open(args.summary, "a", encoding="utf-8") as stream:
                stream.write(markdown_summary(result, DRIFT_OUTPUTS["html"]))
    except (DataError, EvalError, ModelError, OSError) as error:
        say(PROG, "error", error)
        return 2
    for warning in result["warnings"]:
        say(PROG, "warning", warning)
    print("\n".join(summary_lines(result)))
    html = args.out / DRIFT_OUTPUTS["html"]
    print(f"-> {args.out / DRIFT_OUTPUTS['json']}, {html}")
    return 1 if result["drift"] else 0


def _label_export(args: argparse.Namespace) -> int:
    images, orphans = read_review(args.review)
    if not images:
        raise EvalError(
            f"Review folder {args.review} holds no image to label"
            + (f" ({len(orphans)} without their record)" if orphans else "")
            + ". A server keeps the uploads it is unsure of there when started with "
            "--log-dir (see docs/monitor.md): export once it has kept some."
        )
    if args.model is not None:
        classes = [str(name) for name in read_metadata(args.model)["classes"]]
    else:
        named = {label for image in images for label, _ in image.record.top_k}
        named |= {image.record.label for image in images}
        classes = sorted(named - {"unknown"})
    root = args.document_root if args.document_root is not None else args.review.resolve().parent
    tasks = export_tasks(images, root, classes)
    config = labelling_config(classes)
    output_folder(args.out, "export folder")
    (args.out / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")
    (args.out / "config.xml").write_text(config)
    if orphans:
        say(PROG, "warning", f"{len(orphans)} image(s) without a record left out: {orphans[:5]}")
    print(
        f"Wrote {len(tasks)} tasks to {args.out / 'tasks.json'} and the labelling config "
        f"({len(classes)} classes + 'New class') to {args.out / 'config.xml'}.\n"
        f"Start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={shlex.quote(str(Path(root).resolve()))}, "
        "create a project with config.xml as its labelling config, add a Local Files source "
        f"storage with the path {args.review.resolve()} (do not sync it), and import "
        "tasks.json."
    )
    return 0


def _label_import(args: argparse.Namespace) -> int:
    if not args.raw.is_dir():  # a mistyped path would start a dataset of its own
        raise MissingInputError(
            f"Raw folder {args.raw} not found. Give the project's raw images folder (for "
            f"example projects/NAME/data/raw), or create it first to start a dataset."
        )
    written = stage_writing(args.raw)
    if written:
        raise EvalError(
            f"Raw folder {args.raw} is written by the '{written[1]}' stage of {written[0]}: "
            "the next 'dvc repro' would replace it and lose the images added. Import into a "
            "raw folder tracked with 'dvc add' (a project of photos, see docs/new-dataset.md)."
        )
    read = read_export(args.export, args.review)
    result = add_images(args.raw, read.candidates, dry_run=args.dry_run, new_classes=args.new_class)
    verb = "Would add" if args.dry_run else "Added"
    per_class = ", ".join(
        f"{label} {len(files)}" + (" (new class)" if label in result.new_classes else "")
        for label, files in sorted(result.added.items())
    )
    print(
        f"{verb} {result.total} image(s) to {args.raw}" + (f": {per_class}." if per_class else ".")
    )
    if result.duplicates:
        print(f"Skipped {len(result.duplicates)} image(s) already in {args.raw}, same class:")
        for origin, copy in result.duplicates:
            print(f"  {origin}: same image as {copy}")
    if result.repeated:
        print(f"Skipped {len(result.repeated)} image(s) given twice in the export:")
        for origin, earlier in result.repeated:
            print(f"  {origin}: same image as {earlier}")
    skipped = len(read.unlabelled) + len(read.cancelled)
    if skipped:
        print(
            f"Skipped {skipped} task(s) without a label: {len(read.unlabelled)} unlabelled, "
            f"{len(read.cancelled)} skipped in Label Studio."
        )
    if read.gone:
        print(
            f"Skipped {len(read.gone)} labelled task(s) whose image is no longer in "
            f"{args.review} (a server drops its oldest kept images past --review-max-mib): "
            f"{listing(read.gone)}."
        )
    if read.done:
        if args.dry_run:
            print(f"Would move {len(read.done)} reviewed image(s) to {args.review / IMPORTED}.")
        else:
            moved = archive(args.review, read.done)
            print(
                f"Moved {moved} reviewed image(s), with their records, to "
                f"{args.review / IMPORTED}: the next 'label export' leaves them out."
            )
    if result.total and not args.dry_run:
        print(_next_steps(args.raw))
    return 0


def _next_steps(raw: Path) -> str:
    """What to run to version the new images and retrain."""
    pointer = raw.parent / f"{raw.name}.dvc"
    if pointer.is_file():
        project = raw.resolve().parent.parent
        target = raw.resolve().relative_to(project).as_posix()
        return (
            "Next, version the data and retrain, from the project folder:\n"
            f"  cd {shlex.quote(str(project))}\n  uv run dvc add {shlex.quote(target)}\n"
            "  uv run dvc repro\n"
            f"  git add {shlex.quote(target + '.dvc')} dvc.lock evaluation && "
            "git commit -m 'Add labelled images'"
        )
    return (
        f"Next, version {raw} and retrain: it has no {pointer.name} beside it, so track it "
        f"with 'uv run dvc add {shlex.quote(str(raw))}' from the project folder, then "
        "'uv run dvc repro'."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    return run_command(build_parser(), argv, (DataError, EvalError, ModelError))

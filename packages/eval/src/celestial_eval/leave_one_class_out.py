"""Leave-one-class-out: how well a model recipe answers "unknown" for classes it never saw.

For each held-out class, train on the other classes with the ``train`` and
``ood`` params the project's model was made with, then measure how well the
score separates the held-out class's images (every split: the model never saw
any) from the known classes' held-out images (AUROC), and how many of them the
calibrated threshold rejects. Every score of `celestial_models.ood.SCORES` is
measured from the same trainings, so the choice of score can be checked. The
``rejection`` stage (`celestial_eval.rejection`) runs it and writes the figures.

A model may hold out several classes at once (``classes_per_model``): each
of them is then measured against the classes that model was trained on, as
if held out alone, and the trainings are that many times fewer. On the
reference data, two classes a model gave a mean AUROC of 0.9986 against
0.9990 one at a time, in half the training, and three (the reference's) as
two did (packages/eval/README.md, "How the held-out models are trained, and
what it costs"); five gave 0.994, one class falling to 0.94: the fewer
classes a model knows, the less its figures say of the project's model.

The held-out models share one built and compiled model
(`celestial_models.train.Trainer`), which starts each training from the state
a fresh process would: the figures are those of one `train_model` per class,
bit for bit, at a fraction of the compilations. Trainings on the CPU use one
core each, so the classes are shared out between processes, one per core
(`held_out_figures` is one process's share): the figures do not depend on how
many there are.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from celestial_data import (
    SPLITS,
    VARIED,
    PreparedDataset,
    colourless,
    load_prepared,
    write_prepared,
)
from celestial_data.command import counted
from celestial_data.dataset import default_workers
from celestial_eval.errors import EvalError
from celestial_eval.evaluate import choose_split
from celestial_eval.metrics import DIGITS
from celestial_eval.scoring import auroc
from celestial_models.errors import TrainingDivergedError
from celestial_models.ood import (
    SCORES,
    OodDetector,
    OodParams,
    calibrate_threshold,
    compute_scores,
)
from celestial_models.params import TrainParams

if TYPE_CHECKING:
    from celestial_models.scoring import Scoring
    from celestial_models.train import Trainer

__all__ = [
    "WEAK_AUROC",
    "HeldOutModel",
    "held_out_figures",
    "held_out_groups",
    "held_out_models",
    "leave_one_class_out",
    "shortened",
    "weak_rejection",
    "without_classes",
]


def without_classes(
    dataset: PreparedDataset, held_out: Sequence[int], path: Path
) -> PreparedDataset:
    """A copy of ``dataset`` without the images of the classes ``held_out``, written to ``path``.

    The classes and labels are kept: a model trained on it has the project
    model's shape, one output per class, and the unit of a held-out class
    is never a target (it only learns that no image is of that class). So the
    held-out trainings run the very programs the train stage compiled, loaded
    from the compilation cache (see `celestial_models.backend`). The varied
    copies, when prepared, are kept as the other splits are, and the view the
    images were taken in is recorded, so the held-out model is trained and
    its detector calibrated as the project's are.
    """
    arrays = {}
    for split, count in dataset.splits.items():
        if not count:
            continue
        labels = np.asarray(dataset.labels(split))
        keep = np.flatnonzero(~np.isin(labels, held_out))
        files = dataset.files(split)
        arrays[split] = (
            np.asarray(dataset.images(split))[keep],
            labels[keep],
            [files[i] for i in keep],
        )
    return write_prepared(
        path, list(dataset.classes), dataset.color_mode, arrays, view=dataset.image_format.view
    )


def held_out_images(dataset: PreparedDataset, held_out: int) -> np.ndarray:
    """Every image of class ``held_out``, from all splits (not the varied copies)."""
    parts = []
    for split in SPLITS:
        if dataset.has(split):
            labels = np.asarray(dataset.labels(split))
            parts.append(np.asarray(dataset.images(split))[labels == held_out])
    return np.concatenate(parts)


def measure_held_out(
    scoring: Scoring,
    detector: OodDetector,
    known: np.ndarray,
    unknowns: Mapping[str, np.ndarray],
    val: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """AUROC, rejection and acceptance of every score for one held-out model.

    ``unknowns`` holds the images of each class the model was trained
    without, measured one class at a time against the same ``known`` images.
    ``val`` holds what the detector was calibrated on (the ``val`` images and
    their varied copies, if any): each other score is calibrated on it alike.

    Returns:
        Per class of ``unknowns``, per score: its figures.
    """
    stats = (detector.centroids, detector.precision)
    # One call per set, as a loaded model's Classifier.outputs would make them.
    known_out, val_out = scoring(known), scoring(val)
    unknown_out = {name: scoring(images) for name, images in unknowns.items()}
    figures: dict[str, dict[str, Any]] = {name: {} for name in unknowns}
    for method in SCORES:
        if method == detector.method:  # as the model answers: grey pictures scored as grey
            known_s = detector.scores(*known_out, grey=colourless(known))
            unknown_s = {
                name: detector.scores(*out, grey=colourless(unknowns[name]))
                for name, out in unknown_out.items()
            }
            threshold = detector.threshold
        else:
            known_s = compute_scores(method, *known_out, *stats)
            unknown_s = {
                name: compute_scores(method, *out, *stats) for name, out in unknown_out.items()
            }
            val_s = compute_scores(method, *val_out, *stats)
            threshold = calibrate_threshold(val_s, detector.acceptance)
        accepted = round(float(np.mean(known_s <= threshold)), DIGITS)
        for name, scores in unknown_s.items():
            figures[name][method] = {
                "auroc": round(auroc(known_s, scores), DIGITS),
                "rejected": round(float(np.mean(scores > threshold)), DIGITS),
                "accepted": accepted,
            }
    return figures


def leave_one_class_out(
    prepared: str | Path | PreparedDataset,
    train_params: TrainParams | Mapping[str, Any] | None = None,
    ood_params: OodParams | Mapping[str, Any] | None = None,
    classes: Sequence[str] | str = "all",
    epochs: int = 0,
    work_dir: str | Path | None = None,
    *,
    classes_per_model: int = 1,
    detail: bool = False,
    workers: int | Literal["auto"] = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Train without each held-out class and measure how its images are rejected.

    Args:
        prepared: The project's prepared dataset.
        train_params: The ``train`` params each model is trained with.
        ood_params: The ``ood`` params (score, acceptance).
        classes: The classes to hold out, or ``"all"``.
        epochs: Epochs per training; 0 keeps ``train_params``' epochs.
        classes_per_model: Classes each model is trained without (see
            `held_out_groups`); at most the number of classes less two, so
            that every model tells two classes apart (a larger number is
            brought down to it, and the figures say so in ``warnings``).
        work_dir: Scratch folder (default: a temporary one, removed after).
        detail: Also give every score's figures per class (``detail``).
        workers: Processes training at once; the figures are the same
            whatever their number. ``"auto"``: one per core, when there are
            `STEPS_PER_PROCESS` training steps for each (`process_count`).
            The new processes are spawned, so a script that asks for more
            than one must keep its own code under ``if __name__ ==
            "__main__":``, as ``celestial-eval`` does.
        progress: Say on standard error what will be trained, then each
            held-out class's AUROC as its model is measured (a project of
            many classes trains for minutes).

    Returns:
        The figures written to ``rejection.json`` (see `celestial_eval.rejection.rejection_stage`).

    Raises:
        EvalError: If a class is unknown, the data has too few classes or
            ``classes_per_model`` is below 1.
    """
    if classes_per_model < 1:
        raise EvalError(f"classes_per_model must be 1 or more; got {classes_per_model}.")
    dataset = prepared if isinstance(prepared, PreparedDataset) else load_prepared(prepared)
    if len(dataset.classes) < 3:
        raise EvalError(
            f"Leave-one-class-out needs at least 3 classes (2 to train on, 1 held out); "
            f"{dataset.path} has {len(dataset.classes)}."
        )
    chosen = list(dataset.classes) if classes == "all" else list(classes)
    unknown_names = [c for c in chosen if c not in dataset.classes]
    if unknown_names:
        raise EvalError(
            f"rejection.classes names {', '.join(unknown_names)}, not classes of {dataset.path} "
            f"({', '.join(dataset.classes)}). Fix the list in params.yaml or use 'all'."
        )
    warnings = []
    most = len(dataset.classes) - 2
    if classes_per_model > most:
        warnings.append(
            f"rejection.classes_per_model {classes_per_model} would leave fewer than 2 of the "
            f"{len(dataset.classes)} classes to train on; each model was trained without {most}."
        )
        classes_per_model = most
    groups = held_out_groups(chosen, classes_per_model)
    train_params = TrainParams.of(train_params)
    if epochs:
        train_params = shortened(train_params, epochs)
    ood_params = OodParams.of(ood_params)
    split = choose_split(dataset)  # the known images: test when present, else val
    fitted = sum(dataset.splits[name] for name in dataset.fitted_splits)
    batches = -(-fitted // train_params.batch_size)
    steps = train_params.epochs_for(batches) * batches
    if workers == "auto":
        workers = process_count(len(groups), steps, default_workers())
        if workers > 1 and may_use_accelerator():  # only asked when it matters: 0.07 s
            workers = 1
    count = max(1, min(workers, len(groups)))
    if progress:
        bound = (
            " To spend less on it, hold out fewer classes (rejection.classes: a list of "
            "names), several per model (rejection.classes_per_model) or train each less "
            "(rejection.epochs)."
            if len(groups) > MANY_CLASSES
            else ""
        )
        sizes = sorted({len(group) for group in groups})
        without = (
            "one without each class"
            if sizes == [1]
            else f"each without {' or '.join(map(str, sizes))} classes"
        )
        print(
            f"Training {counted(len(groups), 'held-out model')}, {without}, "
            f"about {steps} steps each, in {counted(count, 'process')}.{bound}",
            file=sys.stderr,
            flush=True,
        )
    shares = [groups[first::count] for first in range(count)]
    recipe = (train_params, ood_params, split, work_dir, progress)
    measured = in_processes(held_out_figures, dataset, shares, recipe)
    per_class = {name: measured[name] for name in chosen}
    figures = summarize(per_class, ood_params, split, detail, classes_per_model)
    warnings.extend(weak_rejection(figures))
    return {**figures, "warnings": warnings} if warnings else figures


#: Below this mean AUROC, the figures warn that unseen classes get through.
WEAK_AUROC = 0.9


def weak_rejection(figures: Mapping[str, Any]) -> list[str]:
    """A warning when unseen classes are told from known ones poorly (`WEAK_AUROC`), else none.

    The stage's figures are the one place a project learns whether its
    model's ``unknown`` answer keeps pictures of other classes out: with
    few images a class, or classes alike, it may not, and the model is
    served all the same.
    """
    auroc = figures["auroc"]
    if auroc >= WEAK_AUROC:
        return []
    name, weakest = min(figures["held_out"].items(), key=lambda item: item[1]["auroc"])
    return [
        f"Unseen classes are told from known ones poorly: mean leave-one-class-out AUROC "
        f"{auroc:.2f} (1 is perfect, 0.5 chance; weakest {name}, {weakest['auroc']:.2f}), and "
        f"{figures['rejected']:.0%} of their images rejected. Served, the model will answer many "
        "pictures of classes it was never trained on as one of its own instead of unknown. More "
        "images per class, or a model that tells the classes apart better, raise it; "
        "held_out gives each class's figures."
    ]


def held_out_groups(classes: Sequence[str], per_model: int) -> list[list[str]]:
    """The classes each held-out model is trained without: ``per_model`` at most, in turn.

    ``ceil(len(classes) / per_model)`` groups; a class's group is its position
    modulo their number, so classes next to each other in the list (often
    alike by name, as ``Moon`` and ``Moon2``) are held out by different models.
    """
    count = -(-len(classes) // per_model)
    return [list(classes[first::count]) for first in range(count)]


def shortened(params: TrainParams, epochs: int) -> TrainParams:
    """``params`` training ``epochs`` epochs, with ``train.min_steps`` in the same proportion.

    A held-out model then trains the share ``epochs / params.epochs`` of the
    steps the project's model trains, whether its epochs or its least number
    of steps (`TrainParams.epochs_for`) decide them: a dataset of a few dozen
    batches is cut short as much as a large one, and ``epochs`` above the
    project's lengthens both.
    """
    min_steps = -(-params.min_steps * epochs // params.epochs)
    return params.model_copy(update={"epochs": epochs, "min_steps": min_steps})


#: Past this many held-out classes, the stage says how to bound its cost.
MANY_CLASSES = 12

#: Training steps that make a process worth starting: what a new process
#: takes to import Keras and load the compiled programs (while the first one
#: trains) is the training of 300 to 1,000 steps at 16 x 16 pixels on one
#: core, by machine. On the reference data, ten held-out models of 132 steps
#: took 11.4 s in two processes against 13.1 s in one, on a machine training
#: 6.6 ms a step.
STEPS_PER_PROCESS = 500


def process_count(classes: int, steps_per_class: int, cores: int) -> int:
    """Processes to train ``classes`` held-out models in: one per core, each with enough steps.

    A process is started only for every `STEPS_PER_PROCESS` training steps,
    so a small project trains in one; never more than one per class or core.
    """
    return max(1, min(cores, classes, classes * steps_per_class // STEPS_PER_PROCESS))


#: Distributions that give JAX a GPU or TPU (their names start so).
ACCELERATOR_PACKAGES = ("jax-cuda", "jax-rocm", "libtpu")


def may_use_accelerator() -> bool:
    """Whether JAX may train on a GPU or TPU here, found without starting JAX.

    Each process on an accelerator takes most of its memory for itself, and
    one training keeps it busy: held-out models are then trained in one.
    ``JAX_PLATFORMS``, when set, says which platform comes first; else an
    installed JAX plugin for CUDA or ROCm, or libtpu, says one may.
    """
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() != "cpu"
    names = (distribution.metadata["Name"] or "" for distribution in metadata.distributions())
    return any(name.lower().replace("_", "-").startswith(ACCELERATOR_PACKAGES) for name in names)


def in_processes(
    function: Callable[..., dict[str, Any]],
    dataset: PreparedDataset,
    shares: Sequence[Sequence[Sequence[str]]],
    recipe: tuple[Any, ...],
) -> dict[str, Any]:
    """``function(dataset, share, *recipe)`` of every share, merged; the first share here.

    Each other share runs in a new process, given the dataset's path: started,
    not forked (a process that has run JAX cannot be forked safely), it
    imports Keras and loads the compiled programs from the cache while this
    one trains.

    Raises:
        EvalError: If a process died without an error of its own (killed,
            out of memory).
    """
    if len(shares) == 1:
        return function(dataset, shares[0], *recipe)
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(len(shares) - 1, mp_context=context) as pool:
            futures = [
                pool.submit(_then_exit_fast, function, dataset.path, share, *recipe)
                for share in shares[1:]
            ]
            measured = function(dataset, shares[0], *recipe)
            for future in futures:
                measured.update(future.result())
    except BrokenProcessPool as error:
        raise EvalError(
            f"A process training held-out models stopped without an error of its own "
            f"({error}). Either it was killed, most likely for lack of memory: free memory, "
            "or hold out fewer classes (rejection.classes in params.yaml), and rerun. Or the "
            "script that started it runs its code on import: a new process imports the "
            "main script again, so keep its code under if __name__ == '__main__':, or ask "
            "for one process (workers=1)."
        ) from error
    return measured


def _then_exit_fast(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``function(*args)`` in a process that ends next, its objects frozen for a fast exit.

    See `celestial_data.command`: Python's last garbage collection would walk
    every object Keras and JAX made while the caller waits for the process to end.
    """
    try:
        return function(*args)
    finally:
        gc.freeze()


def held_out_figures(
    prepared: str | Path | PreparedDataset,
    groups: Sequence[Sequence[str]],
    train_params: TrainParams,
    ood_params: OodParams,
    split: str,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a model without each group of classes of ``groups`` in turn and measure it.

    With ``progress``, says each class's AUROC (of ``ood_params.score``) on
    standard error once measured.

    Returns:
        Per held-out class: its model's validation accuracy, the number of
        its images and the figures of every score (`measure_held_out`), the
        known images being those of ``split`` that its model was trained on.
    """
    dataset = prepared if isinstance(prepared, PreparedDataset) else load_prepared(prepared)
    # The images measured are the dataset's own: without a colourless one, the
    # detectors' grey statistics would never be used (a forward pass saved each).
    grey = any(colourless(dataset.images(s)).any() for s in SPLITS if dataset.has(s))
    measured: dict[str, Any] = {}
    for model in held_out_models(dataset, groups, train_params, ood_params, work_dir, grey=grey):
        calibrated_on = [model.subset.images(s) for s in ("val", VARIED) if model.subset.has(s)]
        val = np.concatenate([np.asarray(images) for images in calibrated_on])
        known = np.asarray(model.subset.images(split))
        unseen = {
            name: held_out_images(dataset, label)
            for name, label in zip(model.names, model.held_out, strict=True)
        }
        results = measure_held_out(model.trainer.scoring, model.detector, known, unseen, val)
        for name, result in results.items():
            measured[name] = {
                "val_accuracy": model.val_accuracy,
                "images": len(unseen[name]),
                "scores": result,
            }
            if progress:
                print(
                    f"  without {name}: AUROC {result[ood_params.score]['auroc']:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
    return measured


@dataclass(frozen=True)
class HeldOutModel:
    """One model of the leave-one-class-out, trained without one class or a few."""

    names: tuple[str, ...]
    """The classes held out."""
    held_out: tuple[int, ...]
    """Their labels in the full dataset."""
    trainer: Trainer
    """The trainer, holding the model just trained (the next one replaces it)."""
    subset: PreparedDataset
    """The training data without the classes' images (classes and labels kept)."""
    detector: OodDetector
    """The unknown-image detector fitted and calibrated as training does."""
    val_accuracy: float


def held_out_models(
    dataset: PreparedDataset,
    groups: Sequence[Sequence[str]],
    train_params: TrainParams,
    ood_params: OodParams,
    work_dir: str | Path | None = None,
    *,
    grey: bool = True,
) -> Iterator[HeldOutModel]:
    """Train one model per group of classes of ``groups``, without them, and yield each in turn.

    Every held-out model has the project model's shapes (see `without_classes`):
    one trainer (one build, one compilation of training, validation and
    scoring, or none when the cache holds them) serves them all, each training
    as a fresh `train_model` would. A model is only valid until the next one
    is yielded. ``grey``: fit each detector's statistics of colourless
    pictures too (`celestial_models.scoring.calibrate`).
    """
    # Keras comes with training: imported here, not with the module.
    from celestial_models.scoring import fit_detector
    from celestial_models.train import Trainer, open_training_data

    trainer: Trainer | None = None
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        for group in groups:
            held_out = tuple(dataset.classes.index(name) for name in group)
            folder = Path(scratch) / f"without-{'-'.join(map(str, held_out))}"
            subset = open_training_data(without_classes(dataset, held_out, folder))
            trainer = trainer or Trainer(train_params, Trainer.shape_of(subset))
            try:
                trainer.fit(subset)
            except TrainingDivergedError as error:
                raise EvalError(
                    f"The held-out model without {'class' if len(group) == 1 else 'classes'} "
                    f"{', '.join(map(repr, group))}, trained with the project's train params: "
                    f"{error} The project's model is unchanged."
                ) from None
            yield HeldOutModel(
                names=tuple(group),
                held_out=held_out,
                trainer=trainer,
                subset=subset,
                detector=fit_detector(trainer.scoring, subset, ood_params, grey=grey),
                val_accuracy=round(float(trainer.kept["val_accuracy"]), DIGITS),
            )


def summarize(
    per_class: Mapping[str, Any],
    ood_params: OodParams,
    split: str,
    detail: bool = False,
    classes_per_model: int = 1,
) -> dict[str, Any]:
    """Averages over held-out classes: the chosen score first, then every score.

    ``held_out`` gives the chosen score's figures per class (named apart from
    ``metrics.json``'s per-class ``classes`` so that ``dvc metrics show``
    keeps them apart); ``detail`` adds every score's, per class;
    ``classes_per_model`` is recorded beside the number of held-out classes.
    """

    def mean(method: str, key: str) -> float:
        return round(float(np.mean([c["scores"][method][key] for c in per_class.values()])), DIGITS)

    method = ood_params.score
    return {
        "score": method,
        "acceptance_target": ood_params.acceptance,
        "known_split": split,
        "held_out_classes": len(per_class),
        "classes_per_model": classes_per_model,
        "auroc": mean(method, "auroc"),
        "rejected": mean(method, "rejected"),
        "accepted": mean(method, "accepted"),
        "val_accuracy": round(
            float(np.mean([c["val_accuracy"] for c in per_class.values()])), DIGITS
        ),
        "by_score": {
            m: {key: mean(m, key) for key in ("auroc", "rejected", "accepted")} for m in SCORES
        },
        "held_out": {
            name: {
                "images": c["images"],
                "val_accuracy": c["val_accuracy"],
                **c["scores"][method],
            }
            for name, c in per_class.items()
        },
        **({"detail": dict(per_class)} if detail else {}),
    }

"""Benchmark how the reference model holds up on pictures changed the way real ones differ.

On the reference images (1,500 JPEGs of 128 x 128, 10 classes), prepared and
trained with projects/planets-moons/params.yaml, every test image is decoded,
changed (darker, brighter, grey, shrunk, shifted, rotated, blurred, noisy,
saved as a JPEG of quality 20, upscaled; and grey, turned and shifted at
once), encoded as a PNG (unless the change
is the encoding) and turned into the model's input by ``Classifier.prepare``,
as an upload is. Per change:

- the full model: accuracy, and the share of the test images it accepts as
  known (``known_accepted``);
- leave-one-class-out, each held-out model trained as the project's model
  is (``--held-out-epochs`` shortens them as ``rejection.epochs`` shortens
  the ``rejection`` stage's): the share of the held-out class's test
  images rejected as unknown, and the AUROC of the score separating them
  (positive) from the known classes' test images; mean and worst over classes.

And per container: every test image's decoded pixels saved as PNG, lossless
WebP, TIFF and BMP, beside the original JPEG bytes: whether
``Classifier.prepare`` gives one array for all of them, and whether the answers
(class and unknown) agree.

Each random change draws from a generator seeded by --seed, the change's name
and the file's name, so the figures repeat whatever the order. A model's
figures also move with its training seed (by a percent or more under some
changes): ``--seeds N`` retrains the full model with ``train.seed`` 0 to N-1
and records each change's accuracy and known-accepted per seed; the
held-out models move more (one class's AUROC by several hundredths), and
``--held-out-seeds N`` trains them with seeds 0 to N-1 too and records each
change's class means per seed. ``--set`` overrides a param, to measure
another choice on the same footing:

    python bench/bench_robust.py --out bench/results/robust.json
    python bench/bench_robust.py --set prepare.view.exposure=true \
        --out bench/results/robust-exposure.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from celestial_data.params import read_yaml

if TYPE_CHECKING:
    from celestial_data import PreparedDataset
    from celestial_models import Classifier
    from celestial_models.ood import OodParams
    from celestial_models.params import TrainParams

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
PARAMS = ROOT / "projects" / "planets-moons" / "params.yaml"
DIGITS = 6
RESAMPLE = Image.Resampling.BICUBIC  # Pillow's default for resize


def encode(image: Image.Image, format: str = "PNG", **options: Any) -> bytes:
    """``image`` encoded in ``format`` (Pillow's name), losslessly unless options say."""
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    """``image`` as a PNG, compressed fast: a 512 x 512 one costs a quarter of the default."""
    return encode(image, "PNG", compress_level=1)


def exposure(image: Image.Image, factor: float) -> Image.Image:
    """Every pixel value times ``factor``, rounded and clipped to 0-255."""
    pixels = np.asarray(image, dtype=np.float64) * factor
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def grayscale(image: Image.Image) -> Image.Image:
    """Converted to grey (Pillow's L) and back to RGB: three equal channels."""
    return image.convert("L").convert(image.mode)


def scale(image: Image.Image, factor: float) -> Image.Image:
    """The whole picture shrunk by ``factor`` about its centre, on a black canvas of its size."""
    small = image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))), RESAMPLE
    )
    canvas = Image.new(image.mode, image.size)
    canvas.paste(small, ((image.width - small.width) // 2, (image.height - small.height) // 2))
    return canvas


def shift(image: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Moved by ``fraction`` of its side in a random direction; black where it left."""
    angle = rng.uniform(0.0, 2 * np.pi)
    offset = (
        round(fraction * image.width * np.cos(angle)),
        round(fraction * image.height * np.sin(angle)),
    )
    canvas = Image.new(image.mode, image.size)
    canvas.paste(image, offset)
    return canvas


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turned about its centre by a random angle (0-360 degrees); black corners."""
    return image.rotate(rng.uniform(0.0, 360.0), resample=RESAMPLE)


def blur(image: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur of ``radius`` pixels."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Gaussian noise of standard deviation ``sigma`` added to every value, clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + rng.normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def upscale(image: Image.Image, factor: int) -> Image.Image:
    """Enlarged ``factor`` times (bicubic), as a phone or an editor upsamples."""
    return image.resize((image.width * factor, image.height * factor), RESAMPLE)


#: A change: the decoded RGB picture and its generator in, the uploaded bytes out.
Change = Callable[[Image.Image, np.random.Generator], bytes]

CHANGES: dict[str, Change] = {
    "none": lambda image, rng: png(image),
    "exposure x0.5": lambda image, rng: png(exposure(image, 0.5)),
    "exposure x1.5": lambda image, rng: png(exposure(image, 1.5)),
    "grayscale": lambda image, rng: png(grayscale(image)),
    "scale 0.6": lambda image, rng: png(scale(image, 0.6)),
    "scale 0.8": lambda image, rng: png(scale(image, 0.8)),
    "shift 10%": lambda image, rng: png(shift(image, 0.1, rng)),
    "shift 20%": lambda image, rng: png(shift(image, 0.2, rng)),
    "rotation": lambda image, rng: png(rotate(image, rng)),
    "blur r1.5": lambda image, rng: png(blur(image, 1.5)),
    "noise sigma 15": lambda image, rng: png(noise(image, 15.0, rng)),
    "jpeg q20": lambda image, rng: encode(image, "JPEG", quality=20),
    "upscale x4": lambda image, rng: png(upscale(image, 4)),
    # Two changes at once: the grey pictures' statistics are calibrated on grey
    # copies of varied ones, and this is how far that holds.
    "grey, turned, shift 10%": lambda image, rng: png(
        grayscale(rotate(shift(image, 0.1, rng), rng))
    ),
}

#: Lossless containers of the same pixels; the original JPEG bytes go beside them.
CONTAINERS: dict[str, Callable[[Image.Image], bytes]] = {
    "png": lambda image: encode(image),
    "webp": lambda image: encode(image, "WEBP", lossless=True),
    "tiff": lambda image: encode(image, "TIFF"),
    "bmp": lambda image: encode(image, "BMP"),
}


def change_rng(seed: int, change: str, file: str) -> np.random.Generator:
    """The generator of one change of one file: the same whatever else is changed."""
    return np.random.default_rng([seed, zlib.crc32(change.encode()), zlib.crc32(file.encode())])


def read_rgb(path: Path) -> Image.Image:
    """A file's pixels, fully decoded (no reduced-scale JPEG decoding), as RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


def changed_inputs(
    classifier: Classifier, pictures: Sequence[Image.Image], files: Sequence[str], seed: int
) -> dict[str, np.ndarray]:
    """Each change's model inputs of every picture, through ``Classifier.prepare``."""
    return {
        name: np.stack(
            [
                classifier.prepare(change(picture, change_rng(seed, name, file)))
                for picture, file in zip(pictures, files, strict=True)
            ]
        )
        for name, change in CHANGES.items()
    }


def answers(classifier: Classifier, batches: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``(class, unknown)`` rows of every batch, from one joined prediction."""
    probabilities, scores = classifier.predict_with_score(np.concatenate(list(batches.values())))
    assert classifier.detector is not None  # predict_with_score raised otherwise
    joined = np.stack([probabilities.argmax(axis=1), classifier.detector.unknown(scores)], axis=1)
    ends = np.cumsum([len(batch) for batch in batches.values()])
    return dict(zip(batches, np.split(joined, ends[:-1]), strict=True))


def full_model_figures(answered: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and the share accepted as known of one batch's answers."""
    return {
        "accuracy": round(float(np.mean(answered[:, 0] == labels)), DIGITS),
        "known_accepted": round(float(np.mean(answered[:, 1] == 0)), DIGITS),
    }


def container_figures(
    classifier: Classifier,
    raw: Path,
    files: Sequence[str],
    pictures: Sequence[Image.Image],
    labels: np.ndarray,
    prepared: np.ndarray,
) -> dict[str, Any]:
    """The same pixels in every container: identical inputs, agreeing answers."""
    encoded = {"jpeg": [(raw / file).read_bytes() for file in files]} | {
        name: [save(picture) for picture in pictures] for name, save in CONTAINERS.items()
    }
    inputs = {
        name: np.stack([classifier.prepare(data) for data in blobs])
        for name, blobs in encoded.items()
    }
    answered = answers(classifier, inputs)
    lossless = list(CONTAINERS)

    def share_equal(arrays: list[np.ndarray]) -> float:
        axes = tuple(range(1, arrays[0].ndim))
        same = np.all([np.all(a == arrays[0], axis=axes) for a in arrays[1:]], axis=0)
        return round(float(np.mean(same)), DIGITS)

    reference = inputs["png"].astype(np.int16)
    return {
        "images": len(files),
        "identical_inputs": share_equal(list(inputs.values())),
        "identical_inputs_lossless": share_equal([inputs[name] for name in lossless]),
        "agreement": share_equal(list(answered.values())),
        "agreement_lossless": share_equal([answered[name] for name in lossless]),
        # The serving path of the original file against the training arrays.
        "jpeg_input_is_prepared_array": share_equal([inputs["jpeg"], prepared]),
        "by_container": {
            name: {
                "input_is_png_input": share_equal([inputs[name], inputs["png"]]),
                "max_abs_difference_from_png": int(
                    np.abs(inputs[name].astype(np.int16) - reference).max()
                ),
                "mean_bytes": round(float(np.mean([len(data) for data in encoded[name]]))),
                **full_model_figures(answered[name], labels),
            }
            for name in encoded
        },
    }


def held_out_figures(
    dataset: PreparedDataset,
    train_params: TrainParams,
    ood_params: OodParams,
    classes: Sequence[str],
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    work_dir: str,
) -> dict[str, Any]:
    """Per held-out class and change: its test images rejected, and the score's AUROC.

    Each model is trained and calibrated as `celestial_eval.leave_one_class_out`
    trains them (one `Trainer` for all, in the same order), then scores every
    change's test images in one pass: ``labels`` are those of ``inputs``.
    """
    from celestial_data import colourless
    from celestial_eval.leave_one_class_out import held_out_models
    from celestial_eval.scoring import auroc

    joined = np.concatenate(list(inputs.values()))
    ends = np.cumsum([len(batch) for batch in inputs.values()])
    per_class: dict[str, Any] = {}
    # One class a model, whatever the project's rejection.classes_per_model: the
    # robustness figures are those of leave-one-class-out proper.
    groups = [[name] for name in classes]
    for model in held_out_models(dataset, groups, train_params, ood_params, work_dir):
        detector = model.detector
        scored = detector.scores(*model.trainer.scoring(joined), grey=colourless(joined))
        parts = np.split(scored, ends[:-1])
        scores = dict(zip(inputs, parts, strict=True))
        unseen = labels == model.held_out[0]
        per_class[model.names[0]] = {
            "val_accuracy": model.val_accuracy,
            "images": int(unseen.sum()),
            "changes": {
                change: {
                    "unknown_rejected": round(float(np.mean(detector.unknown(s[unseen]))), DIGITS),
                    "auroc": round(auroc(s[~unseen], s[unseen]), DIGITS),
                }
                for change, s in scores.items()
            },
        }
    return {name: per_class[name] for name in classes}


def held_out_seed_figures(
    seed_zero: dict[str, Any], train: Callable[[int], dict[str, Any]], seeds: int
) -> dict[str, Any]:
    """Per change: the mean over held-out classes of each figure, for ``train.seed`` 0..seeds-1.

    ``seed_zero`` is `held_out_figures` at seed 0; ``train(seed)`` gives it
    for another seed. One class's AUROC moves by several hundredths from one
    training seed to the next (grey Neptune most), so a target is read on the
    mean over seeds.
    """
    runs = [seed_zero, *(train(seed) for seed in range(1, seeds))]
    changes = next(iter(seed_zero.values()))["changes"]
    return {
        name: {
            key: over_seeds(
                [
                    round(float(np.mean([run[c]["changes"][name][key] for c in run])), DIGITS)
                    for run in runs
                ]
            )
            for key in ("unknown_rejected", "auroc")
        }
        for name in changes
    }


def overridden(document: dict[str, Any], settings: Sequence[str]) -> dict[str, Any]:
    """``document`` with each ``KEY=VALUE`` (dotted key, YAML value, read as DVC reads it) set."""
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator:
            raise SystemExit(f"bench_robust: --set {setting!r} is not KEY=VALUE")
        *parents, leaf = key.split(".")
        section = document
        for parent in parents:
            section = section.setdefault(parent, {})
        section[leaf] = read_yaml(value)
    return document


def seed_figures(
    dataset: PreparedDataset,
    train_params: TrainParams,
    ood_params: OodParams,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    seeds: int,
    work_dir: str,
) -> dict[str, Any]:
    """Per change: accuracy and known-accepted of models trained with seeds 0..seeds-1."""
    from celestial_models import load_classifier, train_model

    runs = []
    for seed in range(seeds):
        model_dir = Path(work_dir) / f"seed-{seed}"
        train_model(
            dataset, model_dir, train_params.model_copy(update={"seed": seed}), ood=ood_params
        )
        runs.append(answers(load_classifier(model_dir), inputs))
    figures: dict[str, Any] = {}
    for name in inputs:
        rows = [full_model_figures(run[name], labels) for run in runs]
        figures[name] = {
            key: over_seeds([row[key] for row in rows]) for key in ("accuracy", "known_accepted")
        }
    return figures


def seeds_table(per_seed: dict[str, Any], columns: dict[str, int]) -> str:
    """Each change's figures over the seeds, mean / min, as a Markdown table.

    ``columns`` maps each figure's key to the digits it is shown with.
    """
    first = next(iter(per_seed.values()))
    count = len(first[next(iter(columns))]["runs"])
    titles = [f"{key.replace('_', ' ')} mean / min" for key in columns]
    titles[0] += f" ({count} seeds)"
    lines = [f"| change | {' | '.join(titles)} |", "| --- |" + " --- |" * len(columns)]
    for name, row in per_seed.items():
        cells = [
            f"{row[key]['mean']:.{digits}f} / {row[key]['min']:.{digits}f}"
            for key, digits in columns.items()
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def over_seeds(runs: list[float]) -> dict[str, Any]:
    """A figure's mean and worst over the seeds, and each seed's."""
    return {"mean": round(float(np.mean(runs)), DIGITS), "min": min(runs), "runs": runs}


def summary(values: dict[str, float]) -> dict[str, Any]:
    """Mean over classes, and the worst class with its value."""
    worst = min(values, key=lambda name: values[name])
    return {
        "mean": round(float(np.mean(list(values.values()))), DIGITS),
        "min": values[worst],
        "min_class": worst,
    }


def mean_and_min(figure: dict[str, Any], digits: int) -> str:
    """``mean / min``, naming the worst class unless every class ties."""
    text = f"{figure['mean']:.{digits}f} / {figure['min']:.{digits}f}"
    return text if figure["min"] == figure["mean"] else f"{text} ({figure['min_class']})"


def table(changes: dict[str, Any], containers: dict[str, Any]) -> str:
    """The figures as a Markdown table, then the containers' line."""
    lines = [
        "| change | accuracy | known accepted | unknown rejected mean / min | AUROC mean / min |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in changes.items():
        lines.append(
            f"| {name} | {row['accuracy']:.3f} | {row['known_accepted']:.3f} | "
            f"{mean_and_min(row['unknown_rejected'], 3)} | {mean_and_min(row['auroc'], 4)} |"
        )
    lines += [
        "",
        f"containers (jpeg, {', '.join(CONTAINERS)}): identical inputs "
        f"{containers['identical_inputs']:.3f} (lossless ones: "
        f"{containers['identical_inputs_lossless']:.3f}), answers agree "
        f"{containers['agreement']:.3f} (lossless ones: {containers['agreement_lossless']:.3f})",
    ]
    for name, row in containers["by_container"].items():
        lines.append(
            f"  {name:5s} input = png input {row['input_is_png_input']:.3f} "
            f"(max |diff| {row['max_abs_difference_from_png']:3d})  accuracy "
            f"{row['accuracy']:.3f}  known accepted {row['known_accepted']:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write its JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "robust.json")
    parser.add_argument("--raw", type=Path, default=REFERENCE)
    parser.add_argument("--params", type=Path, default=PARAMS)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random changes")
    parser.add_argument(
        "--classes", nargs="*", help="classes to hold out (default: the params' rejection.classes)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. prepare.view.exposure=true (YAML value; repeatable)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="also train with train.seed 0..N-1 and record each change's accuracy and "
        "known-accepted per seed (training alone moves them by a percent or more)",
    )
    parser.add_argument(
        "--held-out-seeds",
        type=int,
        default=3,
        help="also train the held-out models with train.seed 1..N-1 and record each change's "
        "unknown-rejected and AUROC per seed (one class's AUROC moves by hundredths)",
    )
    parser.add_argument(
        "--held-out-epochs",
        type=int,
        default=0,
        help="train the held-out models this many epochs, shortened as rejection.epochs "
        "shortens the stage's (default 0: as the project's model, the best likeness of it)",
    )
    args = parser.parse_args()
    if not args.raw.is_dir():
        raise SystemExit(f"bench_robust: reference images not found at {args.raw}")

    from celestial_data import PrepareParams, load_prepared, prepare_dataset
    from celestial_eval.leave_one_class_out import shortened
    from celestial_eval.rejection import RejectionParams
    from celestial_models import TrainParams, load_classifier, train_model
    from celestial_models.ood import OodParams

    started = time.perf_counter()
    document = overridden(read_yaml(args.params.read_text()) or {}, args.set)
    prepare_params = PrepareParams.parse(document.get("prepare"))
    train_params = TrainParams.parse(document.get("train"))
    ood_params = OodParams.parse(document.get("ood"))
    rejection_params = RejectionParams.parse(document.get("rejection"))
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared"
        prepare_dataset(args.raw, prepared, prepare_params)
        dataset = load_prepared(prepared)
        train_model(dataset, Path(scratch) / "model", train_params, ood=ood_params)
        classifier = load_classifier(Path(scratch) / "model")
        timings["prepare_and_train_s"] = time.perf_counter() - started

        lap = time.perf_counter()
        files = dataset.files("test")
        labels = np.asarray(dataset.labels("test"))
        pictures = [read_rgb(args.raw / file) for file in files]
        inputs = changed_inputs(classifier, pictures, files, args.seed)
        full = {
            name: full_model_figures(answered, labels)
            for name, answered in answers(classifier, inputs).items()
        }
        containers = container_figures(
            classifier, args.raw, files, pictures, labels, np.asarray(dataset.images("test"))
        )
        timings["changes_and_containers_s"] = time.perf_counter() - lap

        per_seed: dict[str, Any] = {}
        if args.seeds:  # --seeds 0: none (the figures of no run have no mean)
            lap = time.perf_counter()
            per_seed = seed_figures(
                dataset, train_params, ood_params, inputs, labels, args.seeds, scratch
            )
            timings["seeds_s"] = time.perf_counter() - lap

        lap = time.perf_counter()
        classes = args.classes or (
            list(dataset.classes)
            if rejection_params.classes == "all"
            else list(rejection_params.classes)
        )
        loo_params = (
            shortened(train_params, args.held_out_epochs) if args.held_out_epochs else train_params
        )
        held_out = held_out_figures(
            dataset, loo_params, ood_params, classes, inputs, labels, scratch
        )
        timings["leave_one_class_out_s"] = time.perf_counter() - lap

        held_out_seeds: dict[str, Any] = {}
        if args.held_out_seeds > 1:
            lap = time.perf_counter()
            held_out_seeds = held_out_seed_figures(
                held_out,
                lambda seed: held_out_figures(
                    dataset,
                    loo_params.model_copy(update={"seed": seed}),
                    ood_params,
                    classes,
                    inputs,
                    labels,
                    scratch,
                ),
                args.held_out_seeds,
            )
            timings["held_out_seeds_s"] = time.perf_counter() - lap

    changes = {
        name: full[name]
        | {
            key: summary({c: held_out[c]["changes"][name][key] for c in held_out})
            for key in ("unknown_rejected", "auroc")
        }
        for name in CHANGES
    }
    wall_s = time.perf_counter() - started
    figures = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
        },
        "params": {
            "prepare": prepare_params.dump(),
            "train": train_params.dump(),
            "ood": ood_params.dump(),
            "rejection": rejection_params.dump(),
        },
        "seed": args.seed,
        "held_out_epochs": loo_params.epochs,
        "test_images": len(files),
        "held_out_classes": len(held_out),
        "changes": changes,
        "containers": containers,
        **({"seeds": per_seed} if per_seed else {}),
        "held_out": held_out,
        **({"held_out_seeds": held_out_seeds} if held_out_seeds else {}),
        "timings_s": {key: round(value, 1) for key, value in timings.items()},
        "wall_s": round(wall_s, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, allow_nan=False) + "\n")
    print(table(changes, containers))
    if per_seed:
        print(seeds_table(per_seed, {"accuracy": 3, "known_accepted": 3}))
    if held_out_seeds:
        print(seeds_table(held_out_seeds, {"unknown_rejected": 3, "auroc": 4}))
    print(f"{len(files)} test images, {len(held_out)} held-out classes, {wall_s:.0f} s")


if __name__ == "__main__":
    main()

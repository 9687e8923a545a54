"""Unknown-image scores: calibration, statistics, the trained detector and batch prediction."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial_data import ParamsError, PreparedDataset
from celestial_models import ModelError
from celestial_models.ood import (
    CENTROIDS_FILE,
    GREY_CENTROIDS_FILE,
    GREY_PRECISION_FILE,
    OOD_FILE,
    PRECISION_FILE,
    GreyStatistics,
    OodDetector,
    OodParams,
    calibrate_threshold,
    class_distances,
    class_statistics,
    compute_scores,
)
from celestial_models.params import TrainParams

SIZE = 16


@pytest.mark.parametrize(
    ("count", "acceptance", "accepted"), [(20, 0.95, 19), (10, 0.5, 5), (7, 1.0, 7), (40, 0.9, 36)]
)
def test_the_threshold_accepts_exactly_the_target_share(count, acceptance, accepted) -> None:
    scores = np.random.default_rng(count).permutation(np.arange(count) * 1.5 + 3)
    threshold = calibrate_threshold(scores, acceptance)
    assert int((scores <= threshold).sum()) == accepted
    assert threshold in scores


def test_an_unreachable_share_is_rounded_up_never_down() -> None:
    # 0.95 of 10 is 9.5 images: 10 are accepted, never fewer than the target.
    scores = np.arange(10.0)
    assert (scores <= calibrate_threshold(scores, 0.95)).mean() == 1.0
    assert (scores <= calibrate_threshold(scores, 0.85)).mean() == 0.9


def test_calibration_needs_finite_scores() -> None:
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold(np.array([1.0, np.nan]), 0.9)
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold(np.array([]), 0.9)


def test_mahalanobis_with_identity_precision_is_the_squared_distance_to_the_nearest_centroid():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    features = np.array([[1.0, 2.0], [9.0, 0.0], [5.0, 5.0]])
    scores = compute_scores("mahalanobis", features, None, None, centroids, np.eye(2))
    np.testing.assert_allclose(scores, [5.0, 1.0, 50.0])


def test_a_mahalanobis_detector_scores_exactly_as_compute_scores() -> None:
    # The detector computes its centroids' terms once; the scores must not change.
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(4, 6))
    centroids[2] = np.nan  # a class without training images
    spread = rng.normal(size=(6, 6))
    precision = np.linalg.inv(spread @ spread.T + np.eye(6))
    detector = OodDetector("mahalanobis", 1.0, 0.95, 0.95, centroids, precision)
    for batch in (1, 5):
        features = rng.normal(size=(batch, 6)).astype(np.float32)
        logits = rng.normal(size=(batch, 4))
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        outputs = (features, logits, probabilities)
        expected = compute_scores("mahalanobis", *outputs, centroids, precision)
        np.testing.assert_array_equal(detector.scores(*outputs), expected)


@pytest.mark.parametrize("method", ["mahalanobis", "cosine", "msp"])
def test_colourless_images_are_scored_against_the_grey_statistics(method: str) -> None:
    rng = np.random.default_rng(5)
    spread = rng.normal(size=(6, 6))
    colour = (rng.normal(size=(3, 6)), np.linalg.inv(spread @ spread.T + np.eye(6)))
    grey = (rng.normal(size=(3, 6)) + 4, np.eye(6))
    statistics = GreyStatistics(*grey, threshold=7.5, val_acceptance=0.95)
    detector = OodDetector(method, 2.0, 0.95, 0.95, *colour, grey=statistics)
    features = rng.normal(size=(4, 6))
    logits = rng.normal(size=(4, 3))
    outputs = (features, logits, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    mask = np.array([False, True, False, True])
    scores = detector.scores(*outputs, grey=mask)
    as_colour = compute_scores(method, *outputs, *colour)
    as_grey = compute_scores(method, *outputs, *grey)
    np.testing.assert_allclose(scores[~mask], as_colour[~mask])
    # On the colour threshold's scale: a grey score at its own threshold sits at 2.0.
    np.testing.assert_allclose(scores[mask], as_grey[mask] - 7.5 + 2.0)
    np.testing.assert_allclose(detector.scores(*outputs), as_colour)  # no mask: all colour
    without = OodDetector(method, 2.0, 0.95, 0.95, *colour)
    np.testing.assert_allclose(without.scores(*outputs, grey=mask), as_colour)


def test_grey_probabilities_are_a_softmax_of_minus_half_the_distances() -> None:
    centroids = np.array([[0.0, 0.0], [np.nan, np.nan], [4.0, 0.0]])
    statistics = GreyStatistics(centroids, np.eye(2), threshold=1.0, val_acceptance=1.0)
    features = np.array([[1.0, 0.0], [4.0, 1.0]])
    distances = class_distances(features, centroids, np.eye(2))
    np.testing.assert_allclose(distances, [[1.0, np.inf, 9.0], [17.0, np.inf, 1.0]])
    probabilities = statistics.probabilities(features)
    expected = np.exp(-np.array([[0.5, 4.5], [8.5, 0.5]]))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities[:, [0, 2]], expected)
    assert (probabilities[:, 1] == 0).all()  # no training images: never the answer


def test_energy_msp_and_cosine_follow_their_definitions() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    energy = compute_scores("energy", None, logits, probabilities)
    np.testing.assert_allclose(energy, -np.log(np.exp(logits).sum(axis=1)))
    msp = compute_scores("msp", None, logits, probabilities)
    np.testing.assert_allclose(msp, -probabilities.max(axis=1))
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]])
    cosine = compute_scores("cosine", np.array([[2.0, 0.0], [1.0, 1.0]]), None, None, centroids)
    np.testing.assert_allclose(cosine, [0.0, 1 - np.sqrt(0.5)])


def test_class_statistics_are_class_means_and_a_symmetric_precision() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 4))
    labels = np.repeat([0, 1, 2], 10)
    centroids, precision = class_statistics(features, labels, 3)
    for k in range(3):
        np.testing.assert_allclose(centroids[k], features[labels == k].mean(axis=0))
    np.testing.assert_array_equal(precision, precision.T)
    assert np.all(np.linalg.eigvalsh(precision) > 0)


def test_per_class_statistics_blend_each_class_with_the_shared_covariance() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(36, 3)) * [1.0, 2.0, 0.5]
    labels = np.repeat([0, 2], 18)  # class 1 has no images
    centroids, shared = class_statistics(features, labels, 3)
    _, precisions = class_statistics(features, labels, 3, per_class=True)
    assert precisions.shape == (3, 3, 3)
    shared_covariance = np.linalg.inv(shared)
    for k in (0, 2):
        centred = features[labels == k] - centroids[k]
        expected = (centred.T @ centred + 3 * shared_covariance) / (18 + 3)
        np.testing.assert_allclose(np.linalg.inv(precisions[k]), expected, rtol=1e-9)
        np.testing.assert_array_equal(precisions[k], precisions[k].T)
    np.testing.assert_allclose(precisions[1], shared, rtol=1e-9)  # no images: the shared one


def test_a_picture_off_a_narrow_class_is_farther_with_the_class_s_own_covariance() -> None:
    # Class 0 spreads along x only, class 1 along y only: shared, both axes look
    # alike, so a step across class 0's narrow axis counts no more than one along it.
    rng = np.random.default_rng(2)
    spread = rng.normal(size=400)
    narrow = rng.normal(size=400) * 0.05
    features = np.concatenate(
        [np.stack([spread[:200], narrow[:200]], 1), np.stack([narrow[200:] + 20, spread[200:]], 1)]
    )
    labels = np.repeat([0, 1], 200)
    along, across = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    for per_class in (False, True):
        centroids, precision = class_statistics(features, labels, 2, per_class=per_class)
        far_along, far_across = (
            class_distances(x, centroids, precision)[0, 0] for x in (along, across)
        )
        if per_class:
            assert far_across > 50 * far_along
        else:
            assert far_across == pytest.approx(far_along, rel=0.3)


def test_a_grey_precision_shared_by_all_classes_still_loads_and_scores(tmp_path: Path) -> None:
    # Model folders written before each class had its own grey covariance.
    centroids = np.array([[0.0, 0.0], [4.0, 0.0]])
    grey = GreyStatistics(centroids, np.eye(2), threshold=3.0, val_acceptance=1.0)
    OodDetector("mahalanobis", 2.0, 0.95, 0.95, centroids, np.eye(2), grey=grey).save(tmp_path)
    loaded = OodDetector.load(tmp_path)
    assert loaded is not None and loaded.grey is not None
    assert loaded.grey.precision.shape == (2, 2)
    features = np.array([[1.0, 0.0], [4.0, 2.0]])
    unused = np.zeros((2, 2))  # logits and probabilities: the distance reads neither
    scores = loaded.scores(features, unused, unused, grey=np.array([True, True]))
    np.testing.assert_allclose(scores, np.array([1.0, 4.0]) - 3.0 + 2.0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scroe": "msp"}, "scroe"),
        ({"score": "distance"}, "ood.score: Input should be 'mahalanobis', 'cosine'"),
        ({"acceptance": 0}, "ood.acceptance"),
        ({"acceptance": 1.5}, "ood.acceptance"),
        ({"acceptance": True}, "ood.acceptance"),
    ],
)
def test_bad_ood_params_are_named(params, message) -> None:
    with pytest.raises(ParamsError, match=message):
        OodParams.parse(params)


def test_the_defaults_are_mahalanobis_at_95_percent() -> None:
    assert OodParams().dump() == {"score": "mahalanobis", "acceptance": 0.95}


def far_images() -> np.ndarray:
    """Uniform noise and grey and white frames: like none of the disc classes.

    (A black frame is not here: the discs lie on black, so to a tiny model it
    is a disc image with a very faint disc.)
    """
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=(4, SIZE, SIZE, 3), dtype=np.uint8)
    blank = np.stack([np.full((SIZE, SIZE, 3), v, dtype=np.uint8) for v in (128, 255)])
    return np.concatenate([noise, blank])


def test_training_saves_the_detector_with_the_model(trained: Path) -> None:
    from celestial_data import load_prepared
    from celestial_models import load_classifier

    model_dir = trained / "model"
    for name in (OOD_FILE, CENTROIDS_FILE, PRECISION_FILE):
        assert (model_dir / name).is_file()
    metadata = json.loads((model_dir / "metadata.json").read_text())
    summary = json.loads((model_dir / OOD_FILE).read_text())
    assert metadata["ood"] == summary
    assert summary["score"] == "mahalanobis" and summary["acceptance"] == 0.95
    classifier = load_classifier(model_dir)
    val = load_prepared(trained / "prepared").images("val")
    probabilities, scores = classifier.predict_with_score(val)
    np.testing.assert_allclose(probabilities, classifier.predict(val), atol=1e-6)
    accepted = (~classifier.detector.unknown(scores)).mean()
    assert accepted == pytest.approx(summary["val_acceptance"])
    assert accepted >= 0.95


def train_and_val(dataset: PreparedDataset) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """The ``train`` and ``val`` splits of a prepared dataset, as `write_prepared` takes them."""
    return {
        split: (np.asarray(dataset.images(split)), dataset.labels(split), dataset.files(split))
        for split in ("train", "val")
    }


def test_the_threshold_is_also_calibrated_on_the_varied_copies_when_prepared(
    trained: Path, tmp_path: Path
) -> None:
    from celestial_data import VARIED, load_prepared, write_prepared
    from celestial_models import load_classifier
    from celestial_models.scoring import calibrate

    dataset = load_prepared(trained / "prepared")
    arrays = train_and_val(dataset)
    val, labels, files = arrays["val"]
    # Copies far from their class: turned and darkened.
    copies = np.rot90(val, 1, axes=(1, 2)) // 3
    arrays[VARIED] = (np.concatenate([copies, val]), np.tile(labels, 2), files * 2)
    with_copies = write_prepared(tmp_path / "prepared", list(dataset.classes), "rgb", arrays)
    classifier = load_classifier(trained / "model")
    detector = calibrate(classifier.scoring, with_copies).detector
    plain = calibrate(classifier.scoring, dataset).detector
    clean = detector.scores(*classifier.outputs(val))
    varied = detector.scores(*classifier.outputs(with_copies.images(VARIED)))
    every = np.concatenate([clean, varied])
    # The least threshold that accepts 95% of the images and their copies together.
    assert np.mean(every <= detector.threshold) >= 0.95 > np.mean(every < detector.threshold)
    assert detector.threshold >= plain.threshold
    assert detector.val_acceptance == pytest.approx(np.mean(clean <= detector.threshold))
    assert (detector.varied_images, plain.varied_images) == (2 * len(val), 0)
    (tmp_path / "model").mkdir()
    detector.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / OOD_FILE).read_text())["varied_images"] == 2 * len(val)
    assert OodDetector.load(tmp_path / "model").varied_images == 2 * len(val)


def test_grey_statistics_are_fitted_and_calibrated_on_grey_copies_of_the_varied_copies_too(
    trained: Path, tmp_path: Path
) -> None:
    from celestial_data import TRAIN_VARIED, VARIED, grey_copies, load_prepared, write_prepared
    from celestial_models import load_classifier
    from celestial_models.scoring import calibrate

    dataset = load_prepared(trained / "prepared")
    arrays = train_and_val(dataset)
    for split, source in ((TRAIN_VARIED, "train"), (VARIED, "val")):
        images, labels, files = arrays[source]
        arrays[split] = (np.rot90(images, 1, axes=(1, 2)) // 2, labels, files)  # turned, darker
    with_copies = write_prepared(tmp_path / "prepared", list(dataset.classes), "rgb", arrays)
    classifier = load_classifier(trained / "model")
    grey = calibrate(classifier.scoring, with_copies).detector.grey
    plain = calibrate(classifier.scoring, dataset).detector.grey
    assert grey is not None and plain is not None
    # Centroids of the grey training images and their grey copies together.
    fitted = np.concatenate([arrays["train"][0], arrays[TRAIN_VARIED][0]])
    features = classifier.outputs(grey_copies(fitted)).features
    labels = np.concatenate([arrays["train"][1], arrays[TRAIN_VARIED][1]])
    for k in range(len(dataset.classes)):
        np.testing.assert_allclose(grey.centroids[k], features[labels == k].mean(axis=0), rtol=1e-5)
    # The least threshold that accepts 95% of the grey val images and their copies.
    calibrated = np.concatenate([arrays["val"][0], arrays[VARIED][0]])
    outputs = classifier.outputs(grey_copies(calibrated))
    scores = compute_scores("mahalanobis", *outputs, grey.centroids, grey.precision)
    assert np.mean(scores <= grey.threshold) >= 0.95 > np.mean(scores < grey.threshold)
    assert not np.array_equal(grey.centroids, plain.centroids)


def test_grey_statistics_beyond_the_limit_keep_the_shared_covariance(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celestial_data import load_prepared
    from celestial_models import load_classifier, ood
    from celestial_models.scoring import calibrate

    dataset = load_prepared(trained / "prepared")
    scoring = load_classifier(trained / "model").scoring
    classes, dims = len(dataset.classes), scoring.dims
    assert ood.class_covariances_fit(classes, dims)
    assert calibrate(scoring, dataset).detector.grey.precision.shape == (classes, dims, dims)
    monkeypatch.setattr(ood, "CLASS_COVARIANCES_LIMIT", classes * dims * dims - 1)
    assert not ood.class_covariances_fit(classes, dims)
    assert calibrate(scoring, dataset).detector.grey.precision.shape == (dims, dims)


def test_grey_pictures_of_known_classes_are_accepted_as_the_colour_ones_are(
    trained: Path,
) -> None:
    from celestial_data import grey_copies, load_prepared
    from celestial_models import load_classifier

    classifier = load_classifier(trained / "model")
    detector = classifier.detector
    assert detector.grey is not None
    summary = json.loads((trained / "model" / OOD_FILE).read_text())["grey"]
    assert summary == {"threshold": detector.grey.threshold, "val_acceptance": pytest.approx(1.0)}
    val = grey_copies(load_prepared(trained / "prepared").images("val"))
    _, scores = classifier.predict_with_score(val)
    accepted = np.mean(~detector.unknown(scores))
    assert accepted == pytest.approx(detector.grey.val_acceptance) and accepted >= 0.95
    # Scored against the grey statistics, shifted onto the colour threshold.
    grey = detector.grey
    outputs = classifier.outputs(val)
    as_grey = compute_scores("mahalanobis", *outputs, grey.centroids, grey.precision)
    np.testing.assert_allclose(scores, as_grey + detector.threshold - grey.threshold)
    # Their classes are weighed by the grey statistics too; colour pictures' by the head.
    colour = load_prepared(trained / "prepared").images("val")
    probabilities, _ = classifier.predict_with_score(np.concatenate([val, colour]))
    expected = grey.probabilities(outputs.features)
    np.testing.assert_allclose(probabilities[: len(val)], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities[len(val) :], classifier.outputs(colour).probabilities)
    np.testing.assert_array_equal(classifier.predict(val), probabilities[: len(val)])


def test_a_grayscale_model_has_no_grey_statistics(trained: Path, tmp_path: Path) -> None:
    from celestial_data import grey_copies, load_prepared, write_prepared
    from celestial_models import load_classifier, train_model

    dataset = load_prepared(trained / "prepared")
    arrays = {
        split: (
            grey_copies(dataset.images(split))[..., :1],
            dataset.labels(split),
            dataset.files(split),
        )
        for split in ("train", "val")
    }
    grey = write_prepared(tmp_path / "prepared", list(dataset.classes), "grayscale", arrays)
    train_model(grey, tmp_path / "model", TrainParams(epochs=1, min_steps=0, conv_size=4))
    assert json.loads((tmp_path / "model" / OOD_FILE).read_text())["grey"] is None
    assert not (tmp_path / "model" / GREY_CENTROIDS_FILE).exists()
    assert load_classifier(tmp_path / "model").detector.grey is None


def test_noise_and_blank_frames_are_unknown_to_a_trained_tiny_model(trained: Path) -> None:
    from celestial_models import load_classifier

    classifier = load_classifier(trained / "model")
    _, scores = classifier.predict_with_score(far_images())
    assert classifier.detector.unknown(scores).all(), (scores, classifier.detector.threshold)


def test_the_detector_files_are_byte_identical_across_trainings(
    trained: Path, tmp_path, fast
) -> None:
    from celestial_models import train_model

    train_model(trained / "prepared", tmp_path / "again", TrainParams(**fast))
    detector_files = (OOD_FILE, CENTROIDS_FILE, PRECISION_FILE)
    for name in (*detector_files, GREY_CENTROIDS_FILE, GREY_PRECISION_FILE):
        assert (tmp_path / "again" / name).read_bytes() == (trained / "model" / name).read_bytes()


def test_a_model_without_detector_predicts_but_cannot_score(trained: Path, tmp_path) -> None:
    from celestial_models import load_classifier

    model_dir = tmp_path / "model"
    shutil.copytree(trained / "model", model_dir)
    (model_dir / OOD_FILE).unlink()
    classifier = load_classifier(model_dir)
    assert classifier.detector is None
    assert classifier.predict(far_images()).shape == (6, 3)
    with pytest.raises(ModelError, match="no unknown-image calibration"):
        classifier.predict_with_score(far_images())


def write_folder(folder: Path, trained: Path) -> None:
    from celestial_data import load_prepared

    (folder / "sub").mkdir(parents=True)
    val = load_prepared(trained / "prepared")
    Image.fromarray(val.images("val")[0]).save(folder / "known.png")
    Image.fromarray(far_images()[0]).save(folder / "sub" / "noise.png")
    Image.fromarray(far_images()[-1]).save(folder / "white.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")


def test_predict_writes_one_row_per_image_with_label_score_and_flag(
    trained: Path, tmp_path, capsys
) -> None:
    from celestial_models.cli import main

    write_folder(tmp_path / "images", trained)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(trained / "model"), str(tmp_path / "images"), "-o", str(out)]) == 0
    rows = {row["file"]: row for row in csv.DictReader(out.open())}
    assert list(rows) == ["known.png", "sub/noise.png", "white.png"]
    assert rows["sub/noise.png"]["label"] == "unknown"
    assert rows["sub/noise.png"]["unknown"] == "true"
    assert rows["white.png"]["label"] == "unknown"
    threshold = json.loads((trained / "model" / OOD_FILE).read_text())["threshold"]
    for row in rows.values():
        assert (float(row["score"]) > threshold) == (row["unknown"] == "true")
        assert 0.0 < float(row["probability"]) <= 1.0
    assert "skipped broken.jpg" in capsys.readouterr().err

    assert main(["predict", str(trained / "model"), str(tmp_path / "images"), "--no-reject"]) == 0
    printed = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert printed[1]["file"] == "sub/noise.png"
    assert printed[1]["label"] in ("Mars", "Moon", "Neptune")
    assert printed[1]["unknown"] == "true"


def predicted_beside(trained: Path, folder: Path, unusable: Image.Image, name: str) -> list[str]:
    """The files `predict` classifies in ``folder``: a small image, and ``unusable`` as ``name``."""
    from celestial_models.cli import main

    folder.mkdir()
    Image.fromarray(far_images()[0]).save(folder / "small.png")
    unusable.save(folder / name)
    out = folder.parent / "predictions.csv"
    assert main(["predict", str(trained / "model"), str(folder), "-o", str(out)]) == 0
    return [row["file"] for row in csv.DictReader(out.open())]


def test_predict_skips_an_image_too_large_to_decode_naming_it(
    trained: Path, tmp_path, capsys
) -> None:
    huge = Image.new("L", (20_000, 20_000))  # a decompression bomb to Pillow
    assert predicted_beside(trained, tmp_path / "images", huge, "huge.png") == ["small.png"]
    assert "skipped huge.png: The image has 400000000 pixels" in capsys.readouterr().err


def test_predict_skips_an_image_of_32_bit_pixels_saying_how_to_save_it(
    trained: Path, tmp_path, capsys
) -> None:
    values = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    science = Image.fromarray(values)
    assert predicted_beside(trained, tmp_path / "images", science, "science.tif") == ["small.png"]
    warning = capsys.readouterr().err
    assert "skipped science.tif: Cannot use the image: 32-bit floating-point pixels" in warning
    assert "save the image with 8 or 16 bits per channel." in warning


def test_predict_names_the_files_it_leaves_out_and_how_to_read_phone_photos(
    trained: Path, tmp_path, capsys
) -> None:
    folder = tmp_path / "images"
    predicted = predicted_beside(trained, folder, Image.new("L", (4, 4)), "tiny.png")
    assert predicted == ["small.png", "tiny.png"]
    capsys.readouterr()
    (folder / "phone.HEIC").write_bytes(b"not for Pillow")
    (folder / "notes.txt").write_text("notes")
    (folder / ".DS_Store").write_bytes(b"")  # hidden: nobody's image
    from celestial_models.cli import main

    assert main(["predict", str(trained / "model"), str(folder)]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 file(s) that are not images (by their name) left out: notes.txt, " in err
    assert "phone.HEIC. Among them are HEIC photos, which are not read: convert them" in err


def test_predict_given_one_image_file_writes_its_row(trained: Path, tmp_path, capsys) -> None:
    from celestial_models.cli import main

    write_folder(tmp_path / "images", trained)
    assert main(["predict", str(trained / "model"), str(tmp_path / "images")]) == 0
    whole = {row["file"]: row for row in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert (
        main(["predict", str(trained / "model"), str(tmp_path / "images" / "sub" / "noise.png")])
        == 0
    )
    [row] = csv.DictReader(capsys.readouterr().out.splitlines())
    alone, among = row.pop("score"), whole["sub/noise.png"]
    # A batch of one and of three round the score's last digits apart.
    assert float(alone) == pytest.approx(float(among.pop("score")), rel=1e-6)
    assert row == among | {"file": "noise.png"}

    notes = tmp_path / "images" / "notes.txt"
    assert main(["predict", str(trained / "model"), str(notes)]) == 1
    assert f"Cannot classify {notes}: Cannot read the image" in capsys.readouterr().err
    # A file asked for by name is read whatever its name says (a camera's IMG_0001).
    camera = tmp_path / "IMG_0001"
    camera.write_bytes((tmp_path / "images" / "sub" / "noise.png").read_bytes())
    assert main(["predict", str(trained / "model"), str(camera)]) == 0
    [row] = csv.DictReader(capsys.readouterr().out.splitlines())
    assert row["file"] == "IMG_0001" and row["label"] == among["label"]
    fake = tmp_path / "images" / "fake.jpg"  # named as an image, holding none
    fake.write_text("not a picture")
    assert main(["predict", str(trained / "model"), str(fake)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"celestial-models: error: Cannot classify {fake}: Cannot read the image")
    assert main(["predict", str(trained / "model"), str(tmp_path / "missing")]) == 1
    assert "missing not found" in capsys.readouterr().err


def test_predict_on_a_folder_without_images_is_one_clear_error(trained: Path, tmp_path, capsys):
    from celestial_models.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(trained / "model"), str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("celestial-models: error: No image files under")
    assert len(err.strip().splitlines()) == 1


def test_invert_spd_inverts_a_covariance() -> None:
    from celestial_models.ood import invert_spd

    x = np.random.default_rng(1).standard_normal((300, 32))
    covariance = x.T @ x / 300 + np.eye(32) * 1e-3
    np.testing.assert_allclose(invert_spd(covariance) @ covariance, np.eye(32), atol=1e-10)

"""Loading a model directory for inference: predict, prepare, checks, a fresh process."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from celestial_data import ImageFormat, decode, load_prepared, to_array
from celestial_models import Classifier, ModelDirError, ModelError, load_classifier

EditMetadata = Callable[[Path, Callable[[dict[str, Any]], object]], None]


@pytest.fixture(scope="module")
def classifier(trained: Path) -> Classifier:
    return load_classifier(trained / "model")


def test_describes_its_inputs(classifier: Classifier, trained: Path) -> None:
    assert classifier.classes == ("Mars", "Moon", "Neptune")
    assert (classifier.image_size, classifier.color_mode) == (16, "rgb")
    assert classifier.input_shape == (16, 16, 3)
    digest = hashlib.sha256((trained / "model" / "model.keras").read_bytes()).hexdigest()
    assert classifier.model_hash == digest
    assert classifier.metadata["classes"] == ["Mars", "Moon", "Neptune"]


@pytest.mark.parametrize("count", [0, 1, 7, 600])
def test_predicts_probabilities_for_any_batch_size(classifier: Classifier, count: int) -> None:
    images = np.random.default_rng(0).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)
    probabilities = classifier.predict(images)
    assert probabilities.dtype == np.float32 and probabilities.shape == (count, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    if count:  # each image's answer does not depend on the batch it came in
        np.testing.assert_allclose(classifier.predict(images[:1]), probabilities[:1], rtol=1e-5)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 16, 16, 3), dtype=np.float32),
        np.zeros((2, 32, 32, 3), dtype=np.uint8),
        np.zeros((16, 16, 3), dtype=np.uint8),
    ],
    ids=["float", "other size", "no batch axis"],
)
def test_refuses_inputs_of_another_shape_or_type(
    classifier: Classifier, images: np.ndarray
) -> None:
    with pytest.raises(ModelError, match=r"uint8 batch of shape \(N, 16, 16, 3\).*prepare"):
        classifier.predict(images)


def test_prepare_matches_celestial_data_for_paths_bytes_and_images(
    classifier: Classifier, tmp_path: Path
) -> None:
    picture = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    )
    path = tmp_path / "picture.png"
    picture.save(path)
    expected = to_array(decode(path), ImageFormat(16, "rgb"))
    stream = io.BytesIO()
    picture.save(stream, format="PNG")
    pixels = np.asarray(picture)
    for source in (
        path,
        str(path),
        stream.getvalue(),
        bytearray(stream.getvalue()),
        picture,
        pixels,
    ):
        prepared = classifier.prepare(source)
        assert prepared.dtype == np.uint8
        np.testing.assert_array_equal(prepared, expected)
    assert classifier.predict(classifier.prepare(path)[None]).shape == (1, 3)


def test_prepare_refuses_what_is_not_an_image(classifier: Classifier) -> None:
    with pytest.raises(ModelError, match=r"^Cannot read the image: Pillow recognises no image "
                       r"format in 12 bytes\. Send a JPEG"):  # fmt: skip
        classifier.prepare(b"not an image")
    with pytest.raises(ModelError, match=r"takes encoded image bytes, .* Received: NoneType"):
        classifier.prepare(None)


def test_prepare_turns_and_checks_a_pillow_image_as_it_does_its_file(
    classifier: Classifier, tmp_path: Path
) -> None:
    sensor = np.zeros((30, 60, 3), dtype=np.uint8)
    sensor[:, :20] = (250, 200, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone's photo: turn a quarter clockwise to show it
    path = tmp_path / "phone.jpg"
    Image.fromarray(sensor).save(path, exif=exif, quality=95)
    with Image.open(path) as opened:
        np.testing.assert_array_equal(classifier.prepare(opened), classifier.prepare(path))
    with pytest.raises(ModelError, match=r"^Cannot use the image: 32-bit floating-point"):
        classifier.prepare(Image.new("F", (8, 8)))
    with pytest.raises(ModelError, match=r"^Cannot use the image: .*0 x 0 pixels"):
        classifier.prepare(Image.new("RGB", (0, 0)))


def test_prepare_names_a_cut_file_of_a_known_format(classifier: Classifier) -> None:
    stream = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 60, 30)).save(stream, format="AVIF")
    data = stream.getvalue()
    with pytest.raises(ModelError, match=r"^Cannot use the image: truncated or corrupt image"):
        classifier.prepare(data[: len(data) - 20])


def test_prepare_takes_decoded_arrays_of_any_common_layout(classifier: Classifier) -> None:
    grey = np.random.default_rng(1).integers(0, 256, (24, 24), dtype=np.uint8)
    expected = classifier.prepare(Image.fromarray(grey))
    np.testing.assert_array_equal(classifier.prepare(grey[..., None]), expected)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    np.testing.assert_array_equal(classifier.prepare(rgba), classifier.prepare(rgba[..., :3]))
    for bad in (grey.astype(np.float32) / 255, grey[..., None].repeat(2, axis=2), grey[0]):
        with pytest.raises(ModelError, match=r"must be a uint8 array of shape \(H, W\).*Received"):
            classifier.prepare(bad)


def test_missing_model_directory_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"not found.*celestial-models train"):
        load_classifier(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["model.keras", "inference.jax"])
def test_incomplete_model_directory_is_refused(trained: Path, tmp_path: Path, name: str) -> None:
    shutil.copytree(trained / "model", tmp_path / "model")
    (tmp_path / "model" / name).unlink()
    with pytest.raises(ModelDirError, match=rf"incomplete: {re.escape(name)} is missing.*dvc"):
        load_classifier(tmp_path / "model")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: m.update(format_version=99), r"format version 99.*reads version 1.*Retrain"),
        (
            lambda m: m["program"].update(model_sha256="0"),
            r"model\.keras is not the model inference\.jax was exported from",
        ),
        (lambda m: m.update(program="inference.jax"), r"'program' is 'inference.jax', not the"),
    ],
    ids=["another version", "another model.keras", "hand-edited program"],
)
def test_metadata_that_does_not_describe_the_folder_is_refused(
    trained: Path,
    tmp_path: Path,
    edit_metadata: EditMetadata,
    change: Callable[[dict[str, Any]], object],
    says: str,
) -> None:
    shutil.copytree(trained / "model", tmp_path / "model")
    edit_metadata(tmp_path / "model", change)
    with pytest.raises(ModelDirError, match=says):
        load_classifier(tmp_path / "model")


def test_model_and_metadata_from_different_trainings_are_refused(
    trained: Path,
    tmp_path: Path,
    edit_metadata: EditMetadata,
    without_program: Callable[[Path], None],
) -> None:
    shutil.copytree(trained / "model", tmp_path / "model")
    edit_metadata(tmp_path / "model", lambda metadata: metadata["classes"].append("Pluto"))
    with pytest.raises(ModelDirError, match=r"rows of \d+ values.*says .* and 4 classes.*retrain"):
        load_classifier(tmp_path / "model")
    without_program(tmp_path / "model")  # a folder from before the program: Keras says it
    with pytest.raises(ModelDirError, match=r"gives 3 classes.*says .* and 4 classes.*retrain"):
        load_classifier(tmp_path / "model")


@pytest.mark.parametrize("cut", [7, 1000, -100])
def test_a_cut_or_corrupt_model_file_is_named_so(
    trained: Path, tmp_path: Path, cut: int, without_program: Callable[[Path], None]
) -> None:
    # Keras itself says "File not found" for a file that is there.
    shutil.copytree(trained / "model", tmp_path / "model")
    model_file = tmp_path / "model" / "model.keras"
    model_file.write_bytes(b"garbage" if cut == 7 else model_file.read_bytes()[:cut])
    without_program(tmp_path / "model")  # Keras reads it (test_program: the program's check)
    with pytest.raises(ModelDirError, match=r"not a whole \.keras file.*'dvc checkout dvc\.yaml'"):
        load_classifier(tmp_path / "model")


def test_a_zip_that_is_not_a_model_is_refused(
    trained: Path, tmp_path: Path, without_program: Callable[[Path], None]
) -> None:
    shutil.copytree(trained / "model", tmp_path / "model")
    with zipfile.ZipFile(tmp_path / "model" / "model.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    without_program(tmp_path / "model")
    with pytest.raises(ModelDirError, match="Cannot load"):
        load_classifier(tmp_path / "model")


@pytest.mark.slow
def test_model_file_loads_in_a_fresh_process_with_keras_alone(
    classifier: Classifier, trained: Path
) -> None:
    dataset = load_prepared(trained / "prepared")
    code = (
        "import sys, numpy as np, celestial_models, keras\n"
        "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))\n"
    )
    np.save(trained / "val.npy", dataset.images("val"))
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(trained / "model" / "model.keras"),
            str(trained / "val.npy"),
            str(trained / "out.npy"),
        ],
        check=True,
        env={"PATH": "/usr/bin:/bin", "KERAS_BACKEND": "jax"},
    )
    expected = classifier.predict(dataset.images("val"))
    np.testing.assert_allclose(np.load(trained / "out.npy"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_synchronous_dispatch_gives_the_same_probabilities(
    classifier: Classifier, trained: Path
) -> None:
    dataset = load_prepared(trained / "prepared")
    np.save(trained / "val-sync.npy", dataset.images("val"))
    code = (
        "import sys, jax, numpy as np\n"
        "from celestial_models import load_classifier, synchronous_dispatch\n"
        "synchronous_dispatch()\n"
        'assert jax.config.read("jax_cpu_enable_async_dispatch") is False\n'
        "classifier = load_classifier(sys.argv[1])\n"
        "np.save(sys.argv[3], classifier.predict(np.load(sys.argv[2])))\n"
    )
    out = trained / "out-sync.npy"
    subprocess.run(
        [sys.executable, "-c", code, str(trained / "model"), str(trained / "val-sync.npy"), out],
        check=True,
    )
    expected = classifier.predict(dataset.images("val"))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)

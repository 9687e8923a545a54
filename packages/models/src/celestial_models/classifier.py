"""Load a trained model directory for inference: `load_classifier` and `Classifier`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from celestial_data import (
    CorruptImage,
    ImageFormat,
    UnsupportedPixels,
    colourless,
    decode,
    to_array,
    upright,
)
from celestial_data.image import WithImageFormat
from celestial_models.errors import ModelDirError, ModelError
from celestial_models.model_dir import (
    MODEL_FILE,
    PROGRAM_FILE,
    REBUILD_HINT,
    file_sha256,
    read_metadata,
)
from celestial_models.ood import OodDetector
from celestial_models.program import Program
from celestial_models.scoring import Outputs, Scoring

if TYPE_CHECKING:
    from celestial_models.backend import keras

__all__ = ["Classifier", "load_classifier"]


class Classifier(WithImageFormat):
    """A trained model with what is needed to feed it: classes, image shape, colour mode.

    Get one with `load_classifier`. `prepare` turns any image into the model's
    input with the same code that prepared the training data; `predict` returns
    class probabilities for a batch of such inputs.
    """

    def __init__(
        self,
        scoring: Scoring,
        metadata: dict[str, Any],
        model_hash: str,
        detector: OodDetector | None = None,
        model: keras.Model | None = None,
    ):
        #: Embeddings, logits and probabilities of a batch (`celestial_models.scoring.Scoring`).
        self.scoring = scoring
        #: The Keras model, when loaded through Keras (None when run from its program).
        self.model = model
        #: The unknown-image score and threshold (None for a model without one).
        self.detector = detector
        self.metadata = metadata
        self.model_hash = model_hash
        self.classes: tuple[str, ...] = tuple(metadata["classes"])
        self.image_format = metadata_format(metadata)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of images.

        Those of the model's head, but for a colourless image when the
        detector has grey statistics: theirs (see `predict_with_score`).

        Args:
            images: uint8 array ``(N, *input_shape)``, as `prepare` or a
                prepared dataset gives them.

        Returns:
            float32 array ``(N, len(classes))``; each row sums to 1.

        Raises:
            ModelError: If the batch has the wrong dtype or shape.
        """
        images = self._check(images)
        if self._grey_rows(images).any():  # answered as `predict_with_score` answers them
            return self.predict_with_score(images)[0]
        return self.scoring(images).probabilities

    def outputs(self, images: np.ndarray) -> Outputs:
        """Embeddings, logits and probabilities of a batch in one pass.

        Returns:
            A `celestial_models.scoring.Outputs` tuple
            ``(features, logits, probabilities)``.

        Raises:
            ModelError: If the batch has the wrong dtype or shape.
        """
        return self.scoring(self._check(images))

    def predict_with_score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and the unknown-image score of each image, in one pass.

        An image is unknown (none of the classes) when its score is above
        ``detector.threshold``; ``detector.unknown(scores)`` says which. A
        colourless image (`celestial_data.colourless`) of an RGB model is
        scored, and its classes weighed, by the detector's grey statistics
        (`celestial_models.ood.GreyStatistics`): the head, trained mostly on
        colour pictures, reads grey ones less well than they do.

        Args:
            images: uint8 array ``(N, *input_shape)``.

        Returns:
            ``(probabilities float32 (N, K), scores float64 (N,))``.

        Raises:
            ModelError: If the batch is malformed or the model has no detector.
        """
        if self.detector is None:
            raise ModelError(
                "This model directory has no unknown-image calibration (ood.json). "
                "Retrain it with this version of celestial-models (dvc repro)."
            )
        outputs = self.outputs(images)
        grey = self._grey_rows(images)
        probabilities = outputs.probabilities
        if grey.any() and self.detector.grey is not None:
            probabilities = probabilities.copy()
            features = np.asarray(outputs.features)[grey]
            probabilities[grey] = self.detector.grey.probabilities(features)
        return probabilities, self.detector.scores(*outputs, grey=grey)

    def _grey_rows(self, images: np.ndarray) -> np.ndarray:
        """Which images are colourless, when the detector scores those apart (else none)."""
        if self.detector is None or self.detector.grey is None:
            return np.zeros(len(images), dtype=bool)
        return colourless(images)

    def _check(self, images: np.ndarray) -> np.ndarray:
        """``images`` as an array, or a ModelError if not a uint8 batch of the input shape."""
        images = np.asarray(images) if not isinstance(images, np.ndarray) else images
        if images.dtype != np.uint8 or images.shape[1:] != self.input_shape:
            raise ModelError(
                f"Classifier.predict expects a uint8 batch of shape (N, "
                f"{', '.join(map(str, self.input_shape))}). Received: {images.dtype} "
                f"{images.shape}. Convert images with Classifier.prepare and stack them."
            )
        return images

    def prepare(self, image: bytes | str | Path | Image.Image | np.ndarray) -> np.ndarray:
        """Turn an image into one model input, exactly as prepare did for training.

        Args:
            image: Encoded image bytes, a path, a Pillow image (turned as its
                EXIF data says, as a file is), or a decoded uint8 array of
                shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), taken as it
                is (an array holds no EXIF data: turn it first if need be).

        Returns:
            uint8 array of shape `input_shape`.

        Raises:
            ModelError: If the bytes or file are not an image Pillow can read
                or are truncated, its pixels are 32-bit
                (`celestial_data.UnsupportedPixels`), it has no pixels, or
                ``image`` is none of the above.
        """
        if isinstance(image, np.ndarray):
            image = from_array(image)
        elif isinstance(image, Image.Image):  # checked and turned as a decoded file is
            try:
                image = upright(image)
            except OSError as error:
                raise ModelError(f"Cannot use the image: {error}.") from error
        else:
            if not isinstance(image, bytes | bytearray | str | Path):
                raise ModelError(
                    "Classifier.prepare takes encoded image bytes, a path, a Pillow image or "
                    f"a uint8 array (H, W[, C]). Received: {type(image).__name__}."
                )
            try:
                image = decode(bytes(image) if isinstance(image, bytearray) else image)
            except (UnsupportedPixels, CorruptImage) as error:  # found, but not usable
                raise ModelError(f"Cannot use the image: {error}.") from error
            except UnidentifiedImageError as error:
                what = f"{len(image)} bytes" if isinstance(image, bytes | bytearray) else image
                raise ModelError(
                    f"Cannot read the image: Pillow recognises no image format in {what}. "
                    "Send a JPEG, PNG or another format Pillow reads."
                ) from error
            except OSError as error:
                raise ModelError(
                    f"Cannot read the image ({error}). Send a JPEG, PNG or another "
                    "format Pillow reads."
                ) from error
        return to_array(image, self.image_format)


def from_array(pixels: np.ndarray) -> Image.Image:
    """The Pillow image of a decoded uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).

    Raises:
        ModelError: For another dtype or shape, saying what is accepted.
    """
    channels = 1 if pixels.ndim == 2 else pixels.shape[-1] if pixels.ndim == 3 else 0
    if pixels.dtype != np.uint8 or channels not in (1, 3, 4) or 0 in pixels.shape:
        raise ModelError(
            "A decoded image must be a uint8 array of shape (H, W), (H, W, 1), (H, W, 3) or "
            f"(H, W, 4). Received: {pixels.dtype} {pixels.shape}. Scale other values to 0-255 "
            "and convert them with .astype(np.uint8)."
        )
    return Image.fromarray(pixels.reshape(pixels.shape[:2]) if channels == 1 else pixels)


def metadata_format(metadata: dict[str, Any]) -> ImageFormat:
    """The image format that ``metadata.json`` describes (its size, colour mode and view)."""
    return ImageFormat.from_json(metadata)


def load_classifier(model_dir: str | Path) -> Classifier:
    """Load a model directory written by ``celestial-models train``.

    The model runs from its exported program (``inference.jax``, see
    `celestial_models.program`), without Keras; a directory written before
    training exported one is loaded through Keras.

    Args:
        model_dir: Folder holding ``model.keras`` and ``metadata.json``.

    Returns:
        The classifier, ready to predict.

    Raises:
        ModelDirError: If the directory is missing, incomplete or from an
            incompatible version, or its files come from different trainings.
    """
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    model_hash = file_sha256(model_dir / MODEL_FILE)
    expected = metadata_format(metadata).shape
    classes = len(metadata["classes"])
    exported = metadata.get("program")
    model = None
    if exported is not None:  # read_metadata checked it, and that its file is there
        if exported.get("model_sha256") != model_hash:
            raise ModelDirError(
                f"{model_dir / MODEL_FILE} is not the model {PROGRAM_FILE} was exported from "
                "(their SHA-256 differ): it was changed or cut, or comes from another "
                "training. " + REBUILD_HINT
            )
        program = Program.load(model_dir / PROGRAM_FILE)
        width = int(exported.get("embedding", 0)) + 2 * classes
        if program.input_shape != expected or program.width != width:
            raise ModelDirError(
                f"{model_dir}: {PROGRAM_FILE} takes images of shape {program.input_shape} and "
                f"gives rows of {program.width} values, but metadata.json says {expected} and "
                f"{classes} classes ({width} values). The files come from different trainings: "
                "retrain the model (dvc repro -f)."
            )
        scoring = Scoring.of_program(program, classes)
    else:
        from celestial_models.saving import load_model

        model = load_model(model_dir / MODEL_FILE)
        if tuple(model.input_shape) != (None, *expected) or model.output_shape[-1] != classes:
            raise ModelDirError(
                f"{model_dir}: model.keras takes {model.input_shape} and gives "
                f"{model.output_shape[-1]} classes, but metadata.json says {(None, *expected)} "
                f"and {classes} classes. The files come from different trainings: retrain the "
                "model (dvc repro -f)."
            )
        scoring = Scoring.of_model(model)
    return Classifier(scoring, metadata, model_hash, OodDetector.load(model_dir), model)

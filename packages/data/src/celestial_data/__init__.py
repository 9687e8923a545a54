"""Read, check, split and prepare image datasets; render synthetic celestial bodies."""

import importlib.metadata

from celestial_data.check import CheckReport, check_dataset
from celestial_data.dataset import RawDataset, scan
from celestial_data.errors import (
    CorruptImage,
    DataError,
    DatasetError,
    ImageTooLarge,
    ParamsError,
    PreparedDataError,
    UnsupportedPixels,
)
from celestial_data.image import (
    COLOR_MODES,
    ImageFormat,
    channels,
    colourless,
    decode,
    grey_copies,
    to_array,
    upright,
)
from celestial_data.params import Params
from celestial_data.prepare import PrepareParams, PrepareResult, prepare_dataset
from celestial_data.prepared import (
    SPLITS,
    TEST_VARIED,
    TRAIN_VARIED,
    VARIED,
    PreparedDataset,
    load_prepared,
    write_prepared,
)
from celestial_data.split import split_of
from celestial_data.synth import BODIES, SynthParams, render, synthesize
from celestial_data.view import NO_VIEW, ViewParams, canonical_view

__all__ = [
    "BODIES",
    "COLOR_MODES",
    "NO_VIEW",
    "SPLITS",
    "TEST_VARIED",
    "TRAIN_VARIED",
    "VARIED",
    "CheckReport",
    "CorruptImage",
    "DataError",
    "DatasetError",
    "ImageFormat",
    "ImageTooLarge",
    "Params",
    "ParamsError",
    "PrepareParams",
    "PrepareResult",
    "PreparedDataError",
    "PreparedDataset",
    "RawDataset",
    "SynthParams",
    "UnsupportedPixels",
    "ViewParams",
    "__version__",
    "canonical_view",
    "channels",
    "check_dataset",
    "colourless",
    "decode",
    "grey_copies",
    "load_prepared",
    "prepare_dataset",
    "render",
    "scan",
    "split_of",
    "synthesize",
    "to_array",
    "upright",
    "write_prepared",
]

__version__ = importlib.metadata.version("celestial-data")

"""Read, check, split and prepare image datasets; render synthetic celestial bodies."""

from celestial_data.check import CheckReport, check_dataset
from celestial_data.dataset import RawDataset, scan
from celestial_data.errors import (
    DataError,
    DatasetError,
    ImageTooLarge,
    ParamsError,
    PreparedDataError,
)
from celestial_data.image import COLOR_MODES, channels, decode, to_array
from celestial_data.prepare import PrepareResult, prepare_dataset
from celestial_data.prepared import SPLITS, PreparedDataset, load_prepared, write_prepared
from celestial_data.split import split_of
from celestial_data.synth import BODIES, render, synthesize

__all__ = [
    "BODIES",
    "COLOR_MODES",
    "SPLITS",
    "CheckReport",
    "DataError",
    "DatasetError",
    "ImageTooLarge",
    "ParamsError",
    "PrepareResult",
    "PreparedDataError",
    "PreparedDataset",
    "RawDataset",
    "__version__",
    "channels",
    "check_dataset",
    "decode",
    "load_prepared",
    "prepare_dataset",
    "render",
    "scan",
    "split_of",
    "synthesize",
    "to_array",
    "write_prepared",
]

__version__ = "0.1.0"

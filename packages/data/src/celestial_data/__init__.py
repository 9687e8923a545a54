"""Read, check, split and prepare image datasets; render synthetic celestial bodies."""

from celestial_data.errors import DataError, DatasetError, ParamsError, PreparedDataError
from celestial_data.image import COLOR_MODES, channels, decode, to_array
from celestial_data.prepared import SPLITS, PreparedDataset, load_prepared, write_prepared

__all__ = [
    "COLOR_MODES",
    "SPLITS",
    "DataError",
    "DatasetError",
    "ParamsError",
    "PreparedDataError",
    "PreparedDataset",
    "__version__",
    "channels",
    "decode",
    "load_prepared",
    "to_array",
    "write_prepared",
]

__version__ = "0.1.0"

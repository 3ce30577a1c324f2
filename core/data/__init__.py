"""Datasets: one loader per spec ``kind`` in ``DATASETS``, and ``load_dataset`` to use them.

Importing this package registers every loader; the heavy libraries a loader needs (torchvision's
datasets, scikit-learn, the MNIST-1D generator) are imported only when that loader runs.
"""

from core.data import builtin, imagefolder, npz, torchvision_sets  # noqa: F401  (registers the loaders)
from core.data.base import DATASETS, DatasetError, DataSplits, Loader, RawData, Split, resolve_under
from core.data.loading import channel_stats, load_dataset, load_inputs, stratified_pick
from core.data.npz import validate_npz
from core.data.torchvision_sets import expected_files

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetError",
    "Loader",
    "RawData",
    "Split",
    "channel_stats",
    "expected_files",
    "load_dataset",
    "load_inputs",
    "resolve_under",
    "stratified_pick",
    "validate_npz",
]

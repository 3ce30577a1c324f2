"""The model zoo: architectures by spec kind, the raw-input ``Classifier`` wrapper, weight files."""

from core.models.base import Classifier
from core.models.building import MODELS, NetBuilder, build_classifier, build_net, count_params
from core.models.io import load_torchscript, load_weights, read_weights, resolve_data_path, save_weights

__all__ = [
    "MODELS",
    "Classifier",
    "NetBuilder",
    "build_classifier",
    "build_net",
    "count_params",
    "load_torchscript",
    "load_weights",
    "read_weights",
    "resolve_data_path",
    "save_weights",
]

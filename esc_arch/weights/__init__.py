"""Weights: reading checkpoint files safely (:mod:`.files`), converting other layouts
(:mod:`.convert`), and the load path every door shares (:mod:`.load`)."""

from .convert import convert_state_dict
from .files import check_declared_sizes, check_finite, read_state_dict
from .load import infer_config, load_model, load_weights, network_from_state_dict, prepare_state_dict

__all__ = [
    "check_declared_sizes",
    "check_finite",
    "convert_state_dict",
    "infer_config",
    "load_model",
    "load_weights",
    "network_from_state_dict",
    "prepare_state_dict",
    "read_state_dict",
]

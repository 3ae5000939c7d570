"""BasicSR models for ESC. Importing this package registers them in ``MODEL_REGISTRY``."""

from .esc_model import ESCModel

__all__ = ["ESCModel"]

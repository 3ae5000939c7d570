"""The commands of the `esc` console script, one module each (``upscale``, ``export``,
``onnx_export``), and what they share (``common``). Only :mod:`esc_arch.cli` imports a command."""

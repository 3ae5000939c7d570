"""ESC for ComfyUI: copy (or link) this folder into ``ComfyUI/custom_nodes/`` (as ``ComfyUI-ESC``;
any name but ``esc_arch``), with ``esc_arch`` installed in ComfyUI's Python.

Importing it calls :func:`esc_arch.register_spandrel`, so ComfyUI's own "Load Upscale Model"
and "Upscale Image (using Model)" run every fixed-scale ESC file through spandrel. Its own nodes
(:mod:`.nodes`) cover what spandrel cannot: ESC-LTE at any scale or size, ESC-RIB with another
window. See docs/inference.md ("ComfyUI").
"""

import esc_arch

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

esc_arch.register_spandrel()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

"""flashvl nodes for ComfyUI: thin HTTP clients of a flashvl server (nothing loaded inside ComfyUI).

Copy or link this folder into ``ComfyUI/custom_nodes/``. ComfyUI builds that have the V3 node API
(``comfy_api.v0_0_2``) get the V3 nodes through ``comfy_entrypoint``; older ones get the classic
``NODE_CLASS_MAPPINGS``. The node ids are the same in both. ``FLASHVL_COMFYUI_NODES=v1`` (or ``v3``)
forces one form.
"""

from __future__ import annotations

import logging
import os

_wanted = os.environ.get("FLASHVL_COMFYUI_NODES", "auto").strip().lower()
_v3 = False
if _wanted != "v1":
    try:
        import comfy_api.v0_0_2  # noqa: F401

        _v3 = True
    except ImportError:
        if _wanted == "v3":
            raise

if _v3:
    from .nodes_v3 import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
    logging.info("flashvl nodes: ComfyUI V3 node API (comfy_api.v0_0_2)")
else:
    from .nodes_v1 import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
    logging.info("flashvl nodes: classic node API (NODE_CLASS_MAPPINGS)")

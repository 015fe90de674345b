"""The same nodes in ComfyUI's classic form (``NODE_CLASS_MAPPINGS``), for ComfyUI builds without
``comfy_api.v0_0_2``. Node ids, inputs, outputs and behaviour match nodes_v3.py."""

from __future__ import annotations

from . import flashvl_core as core
from .flashvl_client import DEFAULT_TIMEOUT_S, default_server_url

IMAGE_TOOLTIP = "One image or a batch [B,H,W,C]: one request per image. / 单张或一批图片。"


def _server_url() -> dict:
    return {"server_url": ("STRING", {"default": default_server_url(), "tooltip": core.TOOLTIPS["server_url"]})}


def _knobs() -> dict:
    return {
        "timeout_s": (
            "FLOAT",
            {"default": DEFAULT_TIMEOUT_S, "min": 1.0, "max": 3600.0, "tooltip": core.TOOLTIPS["timeout_s"]},
        ),
        "concurrency": (
            "INT",
            {
                "default": core.DEFAULT_CONCURRENCY,
                "min": 1,
                "max": core.MAX_CONCURRENCY,
                "tooltip": core.TOOLTIPS["concurrency"],
            },
        ),
    }


class _Node:
    CATEGORY = core.CATEGORY
    FUNCTION = "run"
    NODE_ID = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.DESCRIPTION = core.NODES[cls.NODE_ID][1]


class FlashvlAsk(_Node):
    NODE_ID = "FlashvlAsk"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("answer", "details_json")
    OUTPUT_IS_LIST = (True, True)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}),
                "question": ("STRING", {"multiline": True, "default": "What is in this image? / 图中有什么?"}),
                **_server_url(),
            },
            "optional": _knobs(),
        }

    def run(self, image, question, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return core.ask(image, question, server_url, timeout_s, concurrency)


class FlashvlCaption(_Node):
    NODE_ID = "FlashvlCaption"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("caption",)
    OUTPUT_IS_LIST = (True,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}), **_server_url()}, "optional": _knobs()}

    def run(self, image, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return core.caption(image, server_url, timeout_s, concurrency)


class FlashvlOCR(_Node):
    NODE_ID = "FlashvlOCR"
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("text", "lines_json", "tables_markdown")
    OUTPUT_IS_LIST = (True, True, True)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}), **_server_url()}, "optional": _knobs()}

    def run(self, image, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return core.ocr(image, server_url, timeout_s, concurrency)


class FlashvlModerate(_Node):
    NODE_ID = "FlashvlModerate"
    RETURN_TYPES = ("BOOLEAN", "STRING", "STRING")
    RETURN_NAMES = ("is_sensitive", "suggestion", "verdict_json")
    OUTPUT_IS_LIST = (True, True, True)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}), **_server_url()}, "optional": _knobs()}

    def run(self, image, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return core.moderate(image, server_url, timeout_s, concurrency)


class FlashvlDetect(_Node):
    NODE_ID = "FlashvlDetect"
    RETURN_TYPES = ("STRING", "MASK")
    RETURN_NAMES = ("boxes_json", "mask")
    OUTPUT_IS_LIST = (True, False)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"image": ("IMAGE", {"tooltip": IMAGE_TOOLTIP}), **_server_url()},
            "optional": {
                "labels": ("STRING", {"default": "", "tooltip": "Comma-separated labels to keep; empty keeps all."}),
                "min_score": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "question": ("STRING", {"default": core.DETECT_QUESTION}),
                **_knobs(),
            },
        }

    def run(
        self,
        image,
        server_url,
        labels="",
        min_score=0.0,
        question=core.DETECT_QUESTION,
        timeout_s=DEFAULT_TIMEOUT_S,
        concurrency=core.DEFAULT_CONCURRENCY,
    ):
        return core.detect(image, server_url, labels, min_score, question, timeout_s, concurrency)


class FlashvlLoadImageFolder(_Node):
    NODE_ID = "FlashvlLoadImageFolder"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "filenames")
    OUTPUT_IS_LIST = (True, True)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"folder": ("STRING", {"default": "flashvl"})}}

    @classmethod
    def IS_CHANGED(cls, folder):
        return core.folder_fingerprint(folder)

    def run(self, folder):
        return core.load_image_folder(folder)


class FlashvlSaveJSONL(_Node):
    NODE_ID = "FlashvlSaveJSONL"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    INPUT_IS_LIST = True
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "json_text": ("STRING", {"forceInput": True}),
                "filename_prefix": ("STRING", {"default": "flashvl/results"}),
            },
            "optional": {"names": ("STRING", {"forceInput": True})},
        }

    def run(self, json_text, filename_prefix, names=None):
        path, ui = core.save_jsonl(json_text, names, filename_prefix[0])
        return {"ui": ui, "result": (path,)}


_CLASSES = (
    FlashvlAsk,
    FlashvlCaption,
    FlashvlOCR,
    FlashvlModerate,
    FlashvlDetect,
    FlashvlLoadImageFolder,
    FlashvlSaveJSONL,
)
NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in _CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: core.NODES[cls.NODE_ID][0] for cls in _CLASSES}

"""The nodes in ComfyUI's V3 node API (``comfy_api.v0_0_2``, pinned; see __init__.py for the fallback)."""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from . import flashvl_core as core
from .flashvl_client import DEFAULT_TIMEOUT_S, default_server_url


def _schema(node_id: str, inputs: list, outputs: list, **extra: object) -> io.Schema:
    display_name, description = core.NODES[node_id]
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=core.CATEGORY,
        description=description,
        inputs=inputs,
        outputs=outputs,
        **extra,
    )


def _client_inputs() -> list:
    """server_url, then the optional knobs every server-calling node has."""
    return [
        io.String.Input("server_url", default=default_server_url(), tooltip=core.TOOLTIPS["server_url"]),
        io.Float.Input(
            "timeout_s",
            default=DEFAULT_TIMEOUT_S,
            min=1.0,
            max=3600.0,
            optional=True,
            tooltip=core.TOOLTIPS["timeout_s"],
        ),
        io.Int.Input(
            "concurrency",
            default=core.DEFAULT_CONCURRENCY,
            min=1,
            max=core.MAX_CONCURRENCY,
            optional=True,
            tooltip=core.TOOLTIPS["concurrency"],
        ),
    ]


def _image_input() -> io.Image.Input:
    return io.Image.Input("image", tooltip="One image or a batch [B,H,W,C]: one request per image. / 单张或一批图片。")


class FlashvlAsk(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlAsk",
            [
                _image_input(),
                io.String.Input("question", multiline=True, default="What is in this image? / 图中有什么?"),
                *_client_inputs(),
            ],
            [
                io.String.Output(
                    "answer",
                    display_name="answer",
                    is_output_list=True,
                    tooltip="One answer per image. / 每张图一个回答。",
                ),
                io.String.Output(
                    "details_json",
                    display_name="details_json",
                    is_output_list=True,
                    tooltip="The whole /infer response: route, stages, boxes, confidence. / 完整响应 (JSON)。",
                ),
            ],
        )

    @classmethod
    def execute(cls, image, question, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return io.NodeOutput(*core.ask(image, question, server_url, timeout_s, concurrency))


class FlashvlCaption(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlCaption",
            [_image_input(), *_client_inputs()],
            [io.String.Output("caption", display_name="caption", is_output_list=True)],
        )

    @classmethod
    def execute(cls, image, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return io.NodeOutput(*core.caption(image, server_url, timeout_s, concurrency))


class FlashvlOCR(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlOCR",
            [_image_input(), *_client_inputs()],
            [
                io.String.Output("text", display_name="text", is_output_list=True),
                io.String.Output("lines_json", display_name="lines_json", is_output_list=True),
                io.String.Output("tables_markdown", display_name="tables_markdown", is_output_list=True),
            ],
        )

    @classmethod
    def execute(cls, image, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return io.NodeOutput(*core.ocr(image, server_url, timeout_s, concurrency))


class FlashvlModerate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlModerate",
            [_image_input(), *_client_inputs()],
            [
                io.Boolean.Output("is_sensitive", display_name="is_sensitive", is_output_list=True),
                io.String.Output(
                    "suggestion", display_name="suggestion", is_output_list=True, tooltip="pass / review / block"
                ),
                io.String.Output("verdict_json", display_name="verdict_json", is_output_list=True),
            ],
        )

    @classmethod
    def execute(cls, image, server_url, timeout_s=DEFAULT_TIMEOUT_S, concurrency=core.DEFAULT_CONCURRENCY):
        return io.NodeOutput(*core.moderate(image, server_url, timeout_s, concurrency))


class FlashvlDetect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlDetect",
            [
                _image_input(),
                *_client_inputs()[:1],
                io.String.Input(
                    "labels",
                    default="",
                    optional=True,
                    tooltip="Comma-separated labels to keep (e.g. person,cup); empty keeps all. / 要保留的标签。",
                ),
                io.Float.Input("min_score", default=0.0, min=0.0, max=1.0, step=0.01, optional=True),
                io.String.Input(
                    "question",
                    default=core.DETECT_QUESTION,
                    optional=True,
                    tooltip="Sent to /infer; its boxes are used. / 发送给 /infer 的问题。",
                ),
                *_client_inputs()[1:],
            ],
            [
                io.String.Output(
                    "boxes_json",
                    display_name="boxes_json",
                    is_output_list=True,
                    tooltip="[{label, score, box: [x1,y1,x2,y2]}]",
                ),
                io.Mask.Output("mask", display_name="mask", tooltip="[B,H,W], 1 inside the kept boxes. / 框内为 1。"),
            ],
        )

    @classmethod
    def execute(
        cls,
        image,
        server_url,
        labels="",
        min_score=0.0,
        question=core.DETECT_QUESTION,
        timeout_s=DEFAULT_TIMEOUT_S,
        concurrency=core.DEFAULT_CONCURRENCY,
    ):
        return io.NodeOutput(*core.detect(image, server_url, labels, min_score, question, timeout_s, concurrency))


class FlashvlLoadImageFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlLoadImageFolder",
            [io.String.Input("folder", default="flashvl", tooltip="A folder inside ComfyUI's input directory.")],
            [
                io.Image.Output("images", display_name="images", is_output_list=True),
                io.String.Output("filenames", display_name="filenames", is_output_list=True),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, folder):
        return core.folder_fingerprint(folder)

    @classmethod
    def execute(cls, folder):
        return io.NodeOutput(*core.load_image_folder(folder))


class FlashvlSaveJSONL(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "FlashvlSaveJSONL",
            [
                io.String.Input("json_text", force_input=True, tooltip="e.g. verdict_json or details_json"),
                io.String.Input("names", force_input=True, optional=True, tooltip="e.g. filenames"),
                io.String.Input("filename_prefix", default="flashvl/results"),
            ],
            [io.String.Output("path", display_name="path")],
            is_input_list=True,
            is_output_node=True,
        )

    @classmethod
    def execute(cls, json_text, filename_prefix, names=None):
        path, ui = core.save_jsonl(json_text, names, filename_prefix[0])
        return io.NodeOutput(path, ui=ui)


NODE_CLASSES = [
    FlashvlAsk,
    FlashvlCaption,
    FlashvlOCR,
    FlashvlModerate,
    FlashvlDetect,
    FlashvlLoadImageFolder,
    FlashvlSaveJSONL,
]


class FlashvlExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODE_CLASSES


async def comfy_entrypoint() -> FlashvlExtension:
    return FlashvlExtension()

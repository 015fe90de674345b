"""What each node does, shared by the V3 nodes (nodes_v3.py) and the classic ones (nodes_v1.py).

An IMAGE is a float tensor [B, H, W, C] in 0..1. Each image of a batch becomes one lossless PNG and one
request; requests run side by side (at most ``concurrency`` at once) and results come back in batch
order, as lists (ComfyUI's list outputs), never as a Python list inside a STRING.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from .flashvl_client import DEFAULT_TIMEOUT_S, FlashvlClient, FlashvlNodeError

T = TypeVar("T")

CATEGORY = "flashvl"
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 16
DETECT_QUESTION = "What objects are in the image and where are they?"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Node ids, English display names and zh/en descriptions: the same in the V3 and the V1 form.
NODES: dict[str, tuple[str, str]] = {
    "FlashvlAsk": (
        "flashvl Ask (image question)",
        "Ask a flashvl server a question about each image; one answer per image, plus the route, stages, "
        "boxes and confidence as JSON. / "
        "向 flashvl 服务器就每张图片提问：每张图一个回答，另附路由、阶段、框和置信度 (JSON)。",
    ),
    "FlashvlCaption": (
        "flashvl Caption",
        "Describe each image with a flashvl server. / 用 flashvl 服务器为每张图片生成描述。",
    ),
    "FlashvlOCR": (
        "flashvl OCR",
        "Read the text in each image: plain text, lines with boxes (JSON), and tables as Markdown. / "
        "识别每张图片中的文字：纯文本、带坐标的文本行 (JSON) 和 Markdown 表格。",
    ),
    "FlashvlModerate": (
        "flashvl Moderate",
        "Content moderation verdict for each image: sensitive or not, pass / review / block, and the full "
        "verdict as JSON. / 对每张图片做内容审核：是否敏感、通过/复审/拦截建议，以及完整结论 (JSON)。",
    ),
    "FlashvlDetect": (
        "flashvl Detect (boxes + mask)",
        "Detect objects in each image: boxes as JSON and a MASK that is 1 inside the boxes. / "
        "检测每张图片中的物体：输出框 (JSON) 以及框内为 1 的遮罩 (MASK)。",
    ),
    "FlashvlLoadImageFolder": (
        "flashvl Load Image Folder",
        "Load every image of a folder under ComfyUI's input directory, in name order, each at its own size, "
        "with its file name. / 按文件名顺序加载 ComfyUI 输入目录下某文件夹中的所有图片（保持原尺寸），并输出文件名。",
    ),
    "FlashvlSaveJSONL": (
        "flashvl Save JSONL",
        "Save JSON results (e.g. moderation verdicts) as one JSONL file in ComfyUI's output directory, one "
        "line per item, with its name. / 将 JSON 结果（如审核结论）逐行保存为 ComfyUI 输出目录中的一个 JSONL 文件。",
    ),
}

TOOLTIPS = {
    "server_url": "flashvl server address; empty: FLASHVL_URL or http://127.0.0.1:8080. The API key comes from "
    "FLASHVL_API_KEY in ComfyUI's environment. / flashvl 服务地址；密钥取自环境变量 FLASHVL_API_KEY。",
    "timeout_s": "Seconds to wait for each image's answer. / 每张图片的等待秒数。",
    "concurrency": "Requests in flight at once for a batch. / 批处理时同时发出的请求数。",
}


# ---------------------------------------------------------------------- images


def split_batch(image: torch.Tensor) -> list[torch.Tensor]:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise FlashvlNodeError(f"expected an IMAGE tensor [B, H, W, C], got shape {tuple(image.shape)}")
    return [image[i] for i in range(image.shape[0])]


def to_png(image: torch.Tensor) -> bytes:
    """One [H, W, C] image as lossless PNG; LoadImage's pixels come back exactly (x/255, rounded)."""
    array = np.clip(np.rint(image.detach().cpu().float().numpy() * 255.0), 0, 255).astype(np.uint8)
    channels = array.shape[-1]
    if channels == 1:
        pil = Image.fromarray(array[..., 0], "L")
    elif channels == 3:
        pil = Image.fromarray(array, "RGB")
    elif channels == 4:
        pil = Image.fromarray(array, "RGBA")
    else:
        raise FlashvlNodeError(f"an IMAGE with {channels} channels cannot be sent (expected 1, 3 or 4)")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def b64(image: torch.Tensor) -> str:
    return base64.b64encode(to_png(image)).decode("ascii")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------- batches


def run_batch(
    node: str, images: list[torch.Tensor], one: Callable[[int, torch.Tensor], T], concurrency: int
) -> list[T]:
    """``one(i, image)`` for every image, at most ``concurrency`` at once; results in batch order.

    Shows progress on the node and stops early when the user cancels the run."""
    progress = _progress_bar(len(images))
    workers = max(1, min(int(concurrency), MAX_CONCURRENCY, len(images)))
    results: dict[int, T] = {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=node)
    try:
        pending: dict[Future[T], int] = {pool.submit(one, i, image): i for i, image in enumerate(images)}
        while pending:
            done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _raise_if_interrupted()
            for future in done:
                results[pending.pop(future)] = future.result()  # the first failure fails the node
                if progress is not None:
                    progress.update(1)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[i] for i in range(len(images))]


def _progress_bar(total: int) -> Any:
    try:
        import comfy.utils

        return comfy.utils.ProgressBar(total)
    except Exception:  # outside ComfyUI, or an older one
        return None


def _raise_if_interrupted() -> None:
    try:
        import comfy.model_management as mm
    except Exception:
        return
    mm.throw_exception_if_processing_interrupted()


# ---------------------------------------------------------------------- nodes


def ask(
    image: torch.Tensor,
    question: str,
    server_url: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> tuple[list[str], list[str]]:
    node = "FlashvlAsk"
    if not question or not question.strip():
        raise FlashvlNodeError(f"{node}: the question is empty; type one into the node's question box.")
    client = FlashvlClient(server_url, node, timeout_s)

    def one(_: int, img: torch.Tensor) -> dict[str, Any]:
        return client.post_json("/infer", {"image_base64": b64(img), "prompt": question})

    answers = run_batch(node, split_batch(image), one, concurrency)
    return [str(a.get("text") or "") for a in answers], [dumps(a) for a in answers]


def caption(
    image: torch.Tensor, server_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, concurrency: int = DEFAULT_CONCURRENCY
) -> tuple[list[str]]:
    node = "FlashvlCaption"
    client = FlashvlClient(server_url, node, timeout_s)

    def one(i: int, img: torch.Tensor) -> str:
        answer = client.post_file("/caption", "file", f"image-{i}.png", to_png(img), "image/png")
        return str(answer.get("caption") or "")

    return (run_batch(node, split_batch(image), one, concurrency),)


def ocr(
    image: torch.Tensor, server_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, concurrency: int = DEFAULT_CONCURRENCY
) -> tuple[list[str], list[str], list[str]]:
    node = "FlashvlOCR"
    client = FlashvlClient(server_url, node, timeout_s)

    def one(_: int, img: torch.Tensor) -> dict[str, Any]:
        return client.post_json("/ocr", {"image_base64": b64(img)})

    read = run_batch(node, split_batch(image), one, concurrency)
    texts = [str(r.get("text") or "") for r in read]
    lines = [dumps(r.get("lines") or []) for r in read]
    tables = ["\n\n".join(t.get("markdown", "") for t in r.get("tables") or []) for r in read]
    return texts, lines, tables


def moderate(
    image: torch.Tensor, server_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, concurrency: int = DEFAULT_CONCURRENCY
) -> tuple[list[bool], list[str], list[str]]:
    node = "FlashvlModerate"
    client = FlashvlClient(server_url, node, timeout_s)

    def one(_: int, img: torch.Tensor) -> dict[str, Any]:
        return client.post_json("/moderate", {"image_base64": b64(img)})

    verdicts = run_batch(node, split_batch(image), one, concurrency)
    return (
        [bool(v.get("is_sensitive")) for v in verdicts],
        [str(v.get("suggestion") or "") for v in verdicts],
        [dumps(v) for v in verdicts],
    )


def detect(
    image: torch.Tensor,
    server_url: str,
    labels: str = "",
    min_score: float = 0.0,
    question: str = DETECT_QUESTION,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> tuple[list[str], torch.Tensor]:
    """Boxes from /infer (pixels of the original image), kept when their label is wanted and their score is
    at least ``min_score``; the MASK is [B, H, W], 1.0 inside any kept box."""
    node = "FlashvlDetect"
    client = FlashvlClient(server_url, node, timeout_s)
    wanted = {w.strip().lower() for w in labels.split(",") if w.strip()}
    images = split_batch(image)

    def one(_: int, img: torch.Tensor) -> list[dict[str, Any]]:
        answer = client.post_json("/infer", {"image_base64": b64(img), "prompt": question or DETECT_QUESTION})
        return [
            box
            for box in answer.get("boxes") or []
            if (not wanted or str(box.get("label", "")).lower() in wanted)
            and float(box.get("score") or 0.0) >= min_score
        ]

    boxes = run_batch(node, images, one, concurrency)
    height, width = images[0].shape[0], images[0].shape[1]
    mask = torch.zeros((len(images), height, width), dtype=torch.float32)
    for i, kept in enumerate(boxes):
        for box in kept:
            x1, y1, x2, y2 = (float(v) for v in box["box"])
            left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
            right, bottom = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
            if right > left and bottom > top:
                mask[i, top:bottom, left:right] = 1.0
    return [dumps(b) for b in boxes], mask


def load_image_folder(folder: str) -> tuple[list[torch.Tensor], list[str]]:
    """Every image in ``folder`` (relative to ComfyUI's input directory), sorted by name, as [1, H, W, 3]."""
    node = "FlashvlLoadImageFolder"
    import folder_paths

    root = os.path.abspath(folder_paths.get_input_directory())
    relative = os.path.normpath((folder or "").strip().replace("\\", "/"))
    if os.path.isabs(relative) or relative == ".." or relative.startswith("../"):
        raise FlashvlNodeError(
            f"{node}: folder {folder!r} must be a folder inside ComfyUI's input directory ({root}); "
            "copy or link the images there."
        )
    path = os.path.join(root, relative)
    if not os.path.isdir(path):
        raise FlashvlNodeError(f"{node}: there is no folder {relative!r} in ComfyUI's input directory ({root}).")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise FlashvlNodeError(f"{node}: {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    images = []
    for name in names:
        with Image.open(os.path.join(path, name)) as pil:
            rgb = ImageOps.exif_transpose(pil).convert("RGB")
        images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None])
    return images, names


def folder_fingerprint(folder: str) -> str:
    """Changes when the folder's images change, so ComfyUI does not reuse a stale load."""
    try:
        import folder_paths

        path = os.path.join(folder_paths.get_input_directory(), os.path.normpath((folder or "").strip()))
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        return dumps([[e.name, e.stat().st_mtime_ns, e.stat().st_size] for e in entries if e.is_file()])
    except Exception:  # a bad folder is reported by the load itself
        return folder


def save_jsonl(records: list[str], names: list[str] | None, filename_prefix: str) -> tuple[str, dict[str, list[Any]]]:
    """Write one JSONL file in ComfyUI's output directory; returns its path relative to that directory."""
    node = "FlashvlSaveJSONL"
    import folder_paths

    names = names or []
    if names and len(names) != len(records):
        raise FlashvlNodeError(
            f"{node}: {len(records)} results but {len(names)} names; link names from the same list as the results."
        )
    output_dir = folder_paths.get_output_directory()
    folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix or "flashvl", output_dir)
    os.makedirs(folder, exist_ok=True)
    file = f"{filename}_{counter:05}_.jsonl"
    with open(os.path.join(folder, file), "w", encoding="utf-8") as out:
        for i, record in enumerate(records):
            try:
                value: Any = json.loads(record)
            except (TypeError, ValueError):
                value = record
            line = {"index": i, "name": names[i] if names else None, "result": value}
            out.write(dumps(line) + "\n")
    relative = os.path.join(subfolder, file) if subfolder else file
    return relative, {"text": [f"{len(records)} lines -> output/{relative}"]}

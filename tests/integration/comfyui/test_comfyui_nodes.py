"""The flashvl ComfyUI nodes (integrations/comfyui/) run in a real ComfyUI against real flashvl servers.

One stack (comfyui_stack.py), all on 127.0.0.1: flashvl server A (offline vision, no language stage, API keys
on, a 1 Mpx pixel cap so a 413 is reachable), flashvl server B (a key ComfyUI does not have: 401s; later
stopped: unreachable), ComfyUI with the V3 nodes and ComfyUI with the classic V1 fallback
(``FLASHVL_COMFYUI_NODES=v1``), both holding A's key in FLASHVL_API_KEY. Every node output is compared
with what the flashvl API itself answers for the same image.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import comfyui_harness as harness
import httpx
import numpy as np
import pytest
from comfyui_stack import EXAMPLES, NODE_IDS, OBJECTS_Q, Stack, b64, with_server
from PIL import Image

from flashvl.testing import stop_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(harness.skip_reason() is not None, reason=harness.skip_reason() or ""),
]


# ---------------------------------------------------------------------- loading


def test_both_forms_load_with_the_same_node_ids_and_types(stack: Stack) -> None:
    """ComfyUI loads the V3 nodes (comfy_api.v0_0_2) and, when asked, the classic fallback; same ids, same
    inputs and outputs, English display names, zh/en descriptions, server_url defaulting to FLASHVL_URL."""
    assert "flashvl nodes: ComfyUI V3 node API (comfy_api.v0_0_2)" in stack.v3.log.read_text()
    assert "flashvl nodes: classic node API (NODE_CLASS_MAPPINGS)" in stack.v1.log.read_text()
    infos = {}
    for form, comfy in (("v3", stack.v3), ("v1", stack.v1)):
        every = httpx.get(f"{comfy.base}/object_info", timeout=30).json()
        infos[form] = {node_id: every[node_id] for node_id in NODE_IDS}
        assert sorted(k for k in every if k.startswith("Flashvl")) == sorted(NODE_IDS)
    for node_id in NODE_IDS:
        v3, v1 = infos["v3"][node_id], infos["v1"][node_id]
        for field in ("output", "output_name", "output_is_list", "output_node", "category", "display_name"):
            assert v3[field] == v1[field], (node_id, field)
        for group in ("required", "optional"):
            assert {k: v[0] for k, v in v3["input"].get(group, {}).items()} == {
                k: v[0] for k, v in v1["input"].get(group, {}).items()
            }, (node_id, group)
        assert v3["python_module"] == v1["python_module"] == "custom_nodes.flashvl_nodes"
        assert v3["category"] == "flashvl"
        assert v3["display_name"].isascii() and v3["display_name"].startswith("flashvl ")
        assert re.search(r"[\u4e00-\u9fff]", v3["description"]) and re.search(r"[A-Za-z]{4}", v3["description"])
        assert v3["description"] == v1["description"]
        if "server_url" in v3["input"]["required"]:
            assert v3["input"]["required"]["server_url"][1]["default"] == stack.a.base
            assert v1["input"]["required"]["server_url"][1]["default"] == stack.a.base
    from flashvl.testing import memory_mib

    print(
        f"\nready: ComfyUI V3 {stack.v3.started_s:.1f}s ({memory_mib(stack.v3.proc.pid)['VmRSS']:.0f} MiB), "
        f"V1 {stack.v1.started_s:.1f}s ({memory_mib(stack.v1.proc.pid)['VmRSS']:.0f} MiB), started side by side; "
        f"flashvl A {stack.a.ready_s:.1f}s, B {stack.b.ready_s:.1f}s"
    )
    ask = infos["v3"]["FlashvlAsk"]
    assert ask["input"]["required"]["image"][0] == "IMAGE"
    assert ask["input"]["required"]["question"][1]["multiline"] is True
    assert ask["output"] == ["STRING", "STRING"] and ask["output_name"] == ["answer", "details_json"]
    assert ask["output_is_list"] == [True, True]
    assert infos["v3"]["FlashvlModerate"]["output"] == ["BOOLEAN", "STRING", "STRING"]
    assert infos["v3"]["FlashvlDetect"]["output"] == ["STRING", "MASK"]
    assert infos["v3"]["FlashvlOCR"]["output_name"] == ["text", "lines_json", "tables_markdown"]


# ---------------------------------------------------------------------- running


def test_batch_of_three_gives_three_answers_in_order(stack: Stack) -> None:
    """LoadImage x3 -> ImageBatch -> FlashvlAsk: three answers, in batch order, each what /infer says."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "chelsea.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "coffee.png"}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["3", 0]}},
        "6": {
            "class_type": "FlashvlAsk",
            "inputs": {"image": ["5", 0], "question": OBJECTS_Q, "server_url": stack.a.base, "concurrency": 3},
        },
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["6", 1]}},
    }
    start = time.perf_counter()
    entry = stack.v3.run(prompt)
    elapsed = time.perf_counter() - start
    assert entry["status"]["status_str"] == "success", entry["status"]
    answers, details = harness.texts(entry, "7"), [json.loads(d) for d in harness.texts(entry, "8")]
    expected = [stack.infer(name, OBJECTS_Q) for name in ("astronaut.png", "chelsea.png", "coffee.png")]
    assert answers == [e["text"] for e in expected]
    assert len(set(answers)) == 3  # three different images, so the order is really checked
    for got, want in zip(details, expected, strict=True):
        assert got["route"] == want["route"] == "rule"
        assert got["boxes"] == want["boxes"]
        assert got["confidence"] == want["confidence"]
        assert [s["name"] for s in got["stages"]] == ["vision"]
        assert (got["image"]["width"], got["image"]["height"]) == (512, 512)
    print(f"\nFlashvlAsk, batch of 3 in ComfyUI: {elapsed:.2f}s for the whole workflow")


def test_caption_ocr_moderate_detect_match_the_api(stack: Stack) -> None:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "table.png"}},
        "10": {"class_type": "FlashvlCaption", "inputs": {"image": ["1", 0], "server_url": stack.a.base}},
        "11": {"class_type": "PreviewAny", "inputs": {"source": ["10", 0]}},
        "20": {"class_type": "FlashvlOCR", "inputs": {"image": ["2", 0], "server_url": stack.a.base}},
        "21": {"class_type": "PreviewAny", "inputs": {"source": ["20", 0]}},
        "22": {"class_type": "PreviewAny", "inputs": {"source": ["20", 1]}},
        "23": {"class_type": "PreviewAny", "inputs": {"source": ["20", 2]}},
        "30": {"class_type": "FlashvlModerate", "inputs": {"image": ["1", 0], "server_url": stack.a.base}},
        "31": {"class_type": "PreviewAny", "inputs": {"source": ["30", 0]}},
        "32": {"class_type": "PreviewAny", "inputs": {"source": ["30", 1]}},
        "33": {"class_type": "PreviewAny", "inputs": {"source": ["30", 2]}},
        "40": {
            "class_type": "FlashvlDetect",
            "inputs": {"image": ["1", 0], "server_url": stack.a.base, "labels": "person", "min_score": 0.3},
        },
        "41": {"class_type": "PreviewAny", "inputs": {"source": ["40", 0]}},
        "42": {"class_type": "MaskToImage", "inputs": {"mask": ["40", 1]}},
        "43": {"class_type": "SaveImage", "inputs": {"images": ["42", 0], "filename_prefix": "flashvl_mask"}},
    }
    entry = stack.v3.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    astronaut, table = stack.images["astronaut.png"], stack.images["table.png"]

    caption = stack.api("/caption", files={"file": ("a.png", astronaut, "image/png")})["caption"]
    assert harness.texts(entry, "11") == [caption]

    ocr = stack.api("/ocr", json={"image_base64": b64(table)})
    assert harness.texts(entry, "21") == [ocr["text"]]
    assert "Apple" in ocr["text"] and "Plum" in ocr["text"]
    assert [json.loads(t) for t in harness.texts(entry, "22")] == [ocr["lines"]]
    assert ocr["tables"], "the table page should give a table"
    assert harness.texts(entry, "23") == [ocr["tables"][0]["markdown"]]

    verdict = stack.api("/moderate", json={"image_base64": b64(astronaut)})
    assert harness.texts(entry, "31") == [str(verdict["is_sensitive"])] == ["False"]
    assert harness.texts(entry, "32") == [verdict["suggestion"]] == ["pass"]
    got = json.loads(harness.texts(entry, "33")[0])
    assert (got["categories"], got["confidence"]) == (verdict["categories"], verdict["confidence"])

    boxes = [b for b in stack.infer("astronaut.png", OBJECTS_Q)["boxes"] if b["label"] == "person"]
    assert boxes, "the detector should find the astronaut"
    assert [json.loads(t) for t in harness.texts(entry, "41")] == [boxes]
    saved = entry["outputs"]["43"]["images"][0]
    mask = np.asarray(Image.open(stack.v3.output_dir / saved["subfolder"] / saved["filename"]).convert("L"))
    assert mask.shape == (512, 512)
    x1, y1, x2, y2 = boxes[0]["box"]
    inside = mask[int(np.ceil(y1)) : int(y2), int(np.ceil(x1)) : int(x2)]
    assert inside.min() == 255
    outside = mask.copy()
    outside[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 0
    assert outside.max() == 0


@pytest.mark.parametrize("form", ["v3", "v1"])
def test_example_workflows_run(stack: Stack, form: str) -> None:
    """The shipped API-format examples run as they are (server_url pointed at the test server), in the V3
    nodes and in the V1 fallback: ask about a loaded image; moderate a folder and save the verdicts."""
    comfy = stack.v3 if form == "v3" else stack.v1
    ask = with_server(json.loads((EXAMPLES / "api" / "ask_image.json").read_text()), stack.a.base)
    entry = comfy.run(ask)
    assert entry["status"]["status_str"] == "success", entry["status"]
    question = ask["2"]["inputs"]["question"]
    assert harness.texts(entry, "3") == [stack.infer("astronaut.png", question)["text"]]
    assert json.loads(harness.texts(entry, "4")[0])["route"] == "rule"

    moderate = with_server(json.loads((EXAMPLES / "api" / "moderate_folder.json").read_text()), stack.a.base)
    moderate["3"]["inputs"]["filename_prefix"] = f"flashvl/verdicts-{form}"
    entry = comfy.run(moderate)
    assert entry["status"]["status_str"] == "success", entry["status"]
    names = ["astronaut.png", "coffee.png", "rocket.png"]  # sorted; notes.txt skipped
    verdicts = [stack.api("/moderate", json={"image_base64": b64(stack.images[n])}) for n in names]
    assert harness.texts(entry, "4") == [v["suggestion"] for v in verdicts]
    written = next((comfy.output_dir / "flashvl").glob(f"verdicts-{form}_*.jsonl"))
    lines = [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]
    assert [line["name"] for line in lines] == names
    assert [line["index"] for line in lines] == [0, 1, 2]
    for line, verdict in zip(lines, verdicts, strict=True):
        assert line["result"]["suggestion"] == verdict["suggestion"]
        assert line["result"]["image"]["sha256"] != ""
        assert (line["result"]["image"]["width"], line["result"]["image"]["height"]) == (
            verdict["image"]["width"],
            verdict["image"]["height"],
        )
    assert entry["outputs"]["3"]["text"] == [f"3 lines -> output/flashvl/{written.name}"]


# ---------------------------------------------------------------------- wiring and errors


def test_wrong_link_is_refused_with_return_type_mismatch(stack: Stack) -> None:
    for comfy in (stack.v3, stack.v1):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
            "2": {"class_type": "FlashvlCaption", "inputs": {"image": ["1", 0], "server_url": stack.a.base}},
            # wrong: a STRING output into the IMAGE input, a BOOLEAN output into the STRING input
            "3": {"class_type": "FlashvlModerate", "inputs": {"image": ["1", 0], "server_url": stack.a.base}},
            "4": {
                "class_type": "FlashvlAsk",
                "inputs": {"image": ["2", 0], "question": ["3", 0], "server_url": stack.a.base},
            },
            "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
        }
        response = comfy.queue(prompt)
        assert response.status_code == 400
        body = response.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        node = body["node_errors"]["4"]
        assert node["class_type"] == "FlashvlAsk"
        details = {e["type"]: [] for e in node["errors"]}
        for error in node["errors"]:
            details[error["type"]].append(error["details"])
        assert sorted(details["return_type_mismatch"]) == [
            "image, received_type(STRING) mismatch input_type(IMAGE)",
            "question, received_type(BOOLEAN) mismatch input_type(STRING)",
        ]


def _failed_node(comfy: harness.ComfyUI, node: str, image: dict[str, Any], server_url: str) -> dict[str, Any]:
    prompt = {
        "1": image,
        "2": {"class_type": node, "inputs": {"image": ["1", 0], "server_url": server_url}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    if node == "FlashvlAsk":
        prompt["2"]["inputs"]["question"] = f"What is this? ({time.time_ns()})"
    error = harness.execution_error(comfy.run(prompt))
    assert error["node_id"] == "2" and error["node_type"] == node
    assert error["exception_type"].endswith("FlashvlNodeError")
    message = error["exception_message"]
    assert message.startswith(f"{node}: ") and "Traceback" not in message
    return error


def test_node_errors_say_what_to_fix(stack: Stack) -> None:
    photo = {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}}
    # 401: server B does not know ComfyUI's key
    message = _failed_node(stack.v3, "FlashvlAsk", photo, stack.b.base)["exception_message"]
    assert "HTTP 401 unauthorized" in message and "FLASHVL_API_KEY" in message
    assert "not one this server accepts" in message
    assert stack.key not in message
    # 413 from intake: 1200x1000 px is over server A's 1 Mpx cap
    big = {"class_type": "EmptyImage", "inputs": {"width": 1200, "height": 1000, "batch_size": 1, "color": 0}}
    message = _failed_node(stack.v3, "FlashvlCaption", big, stack.a.base)["exception_message"]
    assert "HTTP 413 image_too_large_pixels" in message and "Downscale" in message
    # the same failure in the V1 fallback
    message = _failed_node(stack.v1, "FlashvlCaption", big, stack.a.base)["exception_message"]
    assert "HTTP 413 image_too_large_pixels" in message
    # a stopped flashvl server
    stop_server(stack.b.proc)
    message = _failed_node(stack.v3, "FlashvlModerate", photo, stack.b.base)["exception_message"]
    assert f"cannot reach the flashvl server at {stack.b.base}" in message
    assert "connection refused" in message and "flashvl serve" in message


def test_api_key_never_lands_in_workflows_or_history(stack: Stack) -> None:
    """The key lives in ComfyUI's environment only: not in prompts, outputs or history, not in examples."""
    for comfy in (stack.v3, stack.v1):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "coffee.png"}},
            "2": {"class_type": "FlashvlAsk", "inputs": {"image": ["1", 0], "question": "Key check: what is this?"}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
        }
        prompt["2"]["inputs"]["server_url"] = ""  # empty: FLASHVL_URL, i.e. server A
        entry = comfy.run(prompt)
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert json.loads(harness.texts(entry, "3")[0])["route"]
        history = httpx.get(f"{comfy.base}/history", timeout=30).text
        assert stack.key not in history
        assert stack.key not in comfy.log.read_text()
    for example in EXAMPLES.rglob("*.json"):
        text = example.read_text()
        assert "fvl_" not in text and "Bearer" not in text and "api_key" not in text.lower()

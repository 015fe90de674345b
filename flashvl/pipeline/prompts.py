"""Prompt templates for the cascade (vision observations -> language stage).

The system prompts are constants on purpose: llama.cpp reuses the cached
prefix when the system prompt is byte-identical across requests, which saves
seconds per answer on a CPU. Keep them under test when editing: small changes
flip a 1.5B model's answers.
"""

from __future__ import annotations

from flashvl.stages.base import ChatMessage
from flashvl.text.language import Lang

SYSTEM_EN = (
    "You answer questions about an image that you cannot see yourself. Automatic tools looked at it "
    "for you: an object detector, an image classifier, OCR and a safety model. Their observations "
    "are given before the question. Use only these observations. If they do not contain the answer, "
    "say what was observed and that the tools could not tell. Never invent objects, people, text "
    "or actions. Never say something is absent; say it was not detected. Answer in English, "
    "briefly (one to three sentences)."
)
SYSTEM_ZH = (
    "你要回答关于一张图片的问题,但你自己看不到图片。自动工具已经替你观察了它:目标检测器、"
    "图像分类器、文字识别(OCR)和安全模型。它们的观察结果在问题之前给出。只能依据这些观察结果回答。"
    "如果观察结果里没有答案,就说明观察到了什么,并说明工具无法判断。不要编造物体、人物、文字或动作。"
    "不要说某物不存在,只能说未检测到。用中文简洁回答(一到三句话)。"
)
DOCUMENT_MIN_CHARS = 40


def cascade_messages(question: str, description: str, ocr_text: str, lang: Lang) -> list[ChatMessage]:
    """Messages for answering ``question`` from what the vision stage reported.

    Images that are mostly text (documents, screenshots) get only the OCR text:
    object labels on a page of text are noise that small models latch onto.
    """
    if len(ocr_text) >= DOCUMENT_MIN_CHARS:
        observed = ("图中文字(OCR 识别结果):\n" if lang == "zh" else "Text read from the image (OCR):\n") + ocr_text
    else:
        observed = ("观察结果:\n" if lang == "zh" else "Observations:\n") + description
    question_line = f"问题:{question}" if lang == "zh" else f"Question: {question}"
    system = SYSTEM_ZH if lang == "zh" else SYSTEM_EN
    return [ChatMessage("system", system), ChatMessage("user", f"{observed}\n\n{question_line}")]

"""The torch side of the GLM-4.6V stage: preprocessing, collation and one batched ``generate``.

Imported only when a GLM stage loads (torch and transformers are optional extras).

One batch = one ``model.generate`` over left-padded rows (left padding keeps each
greedy row identical to that prompt run alone). Per-request settings survive
batching: ``RowSampling`` applies each row's own temperature and top-p (temperature
0 = greedy: everything but the arg-max is masked), and ``RowTracker`` (a stopping
criterion, called once per step with the new tokens) stops each row at its own
``max_tokens``, at an end token, or when its client went away, and streams each
row's text to that row's job only. Continuous batching (rows joining between decode
steps) lives in ``continuous.py`` and reuses these pieces.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria

from flashvl.stages.glm4v.batcher import Job

# Control tokens that end a turn or must never be shown (GLM's, by string).
STOP_STRINGS = ("<|endoftext|>", "<|user|>", "<|observation|>")


@dataclass
class Prepared:
    """One request, tokenised and with its pixels preprocessed (on a thread, off the event loop)."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, mm_token_type_ids, [pixel_values, image_grid_thw]
    max_tokens: int
    temperature: float
    top_p: float
    preprocess_s: float
    ready_at: float = field(default_factory=time.perf_counter)  # when it was ready to run (queue time)


@dataclass
class RowDelta:
    text: str


@dataclass
class RowDone:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None
    queue_s: float
    generate_s: float
    batch_size: int
    prompt_s: float = 0.0  # the batch's prefill (its prompts and images read, first token out); in generate_s


def choose_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(device: str, dtype: str) -> torch.dtype:
    """CUDA: bf16 where supported, else fp16. CPU: fp32 (bf16 is slower there and changes greedy tokens)."""
    if dtype != "auto":
        return {
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
            "float32": torch.float32,
            "fp32": torch.float32,
        }[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def downscale(image: Image.Image, max_pixels: int) -> Image.Image:
    """Shrink (never enlarge) to at most ``max_pixels``, keeping the aspect ratio."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / pixels)
    size = (max(28, int(image.width * scale)), max(28, int(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def prepare(
    processor: Any,
    messages: list[dict[str, Any]],
    *,
    enable_thinking: bool,
    max_tokens: int,
    temperature: float,
    top_p: float,
) -> Prepared:
    """Chat template + tokenisation + image preprocessing for one request."""
    start = time.perf_counter()
    inputs = processor.apply_chat_template(
        messages,
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
        enable_thinking=enable_thinking,
    )
    # mm_token_type_ids must stay: without it generate silently falls back to 1-D positions.
    inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    return Prepared(dict(inputs), max_tokens, temperature, top_p, time.perf_counter() - start)


def collate(rows: list[Prepared], pad_id: int, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Left-pad the token rows; concatenate the images' patches in row order."""
    width = max(row.inputs["input_ids"].shape[1] for row in rows)

    def left_pad(key: str, value: int) -> torch.Tensor:
        padded = []
        for row in rows:
            tensor = row.inputs[key]
            pad = torch.full((1, width - tensor.shape[1]), value, dtype=tensor.dtype)
            padded.append(torch.cat([pad, tensor], dim=1))
        return torch.cat(padded).to(device)

    batch = {
        "input_ids": left_pad("input_ids", pad_id),
        "attention_mask": left_pad("attention_mask", 0),
        "mm_token_type_ids": left_pad("mm_token_type_ids", 0),
    }
    with_images = [row for row in rows if "pixel_values" in row.inputs]
    if with_images:
        batch["pixel_values"] = torch.cat([r.inputs["pixel_values"] for r in with_images]).to(device, dtype)
        batch["image_grid_thw"] = torch.cat([r.inputs["image_grid_thw"] for r in with_images]).to(device)
    return batch


class RowSampling(LogitsProcessor):
    """Each row's own temperature and top-p; also keeps the model's log-probabilities for confidence.

    When every row is greedy, ``generate`` runs with ``do_sample=False`` (``all_greedy``) and the
    scores pass through untouched: no sort over the vocabulary at each step."""

    def __init__(self, temperatures: list[float], top_ps: list[float]) -> None:
        self.temperatures = torch.tensor([max(t, 1e-5) for t in temperatures]).unsqueeze(1)
        self.greedy = torch.tensor([t <= 0 for t in temperatures])
        self.all_greedy = bool(self.greedy.all())
        self.top_ps = torch.tensor(top_ps).unsqueeze(1)
        self.last_logprobs: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        self.last_logprobs = torch.log_softmax(scores, dim=-1)
        if self.all_greedy:
            return scores
        device = scores.device
        greedy = self.greedy.to(device)
        top = scores.argmax(dim=-1, keepdim=True)
        scaled = scores / self.temperatures.to(device)
        # top-p: drop the tail of each row's sorted distribution beyond its own p.
        sorted_scores, order = scaled.sort(dim=-1, descending=True)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) > self.top_ps.to(device)
        drop = drop_sorted.scatter(1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
        one_hot = torch.full_like(scores, float("-inf")).scatter(1, top, 0.0)
        return torch.where(greedy.unsqueeze(1), one_hot, scaled)


@dataclass
class _Row:
    job: Job[Prepared]
    tokenizer: Any
    stop_ids: set[int]
    max_tokens: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    shown: str = ""  # the text emitted so far (live rows)
    # Incremental detokenisation (as vLLM does): decode a short window, not the whole answer, per step.
    prefix_offset: int = 0
    read_offset: int = 0
    finish_reason: str | None = None

    def add(self, token: int, logprob: float | None) -> None:
        if self.finish_reason is not None:
            return
        if self.job.cancelled.is_set():
            self.finish_reason = "cancelled"
            return
        if token in self.stop_ids:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        if logprob is not None and math.isfinite(logprob):
            self.logprobs.append(logprob)
        if self.job.live:
            self._emit_new_text()
        if len(self.tokens) >= self.max_tokens:
            self.finish_reason = "length"

    def _emit_new_text(self) -> None:
        decode = self.tokenizer.decode
        before = decode(self.tokens[self.prefix_offset : self.read_offset], skip_special_tokens=False)
        now = decode(self.tokens[self.prefix_offset :], skip_special_tokens=False)
        if len(now) > len(before) and not now.endswith("\ufffd"):  # wait for an incomplete UTF-8 sequence
            delta = now[len(before) :]
            self.job.emit(RowDelta(delta))
            self.shown += delta
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)


class RowTracker(StoppingCriteria):
    """Called once per step with the new tokens: streams, and says which rows are done."""

    def __init__(self, rows: list[_Row], sampling: RowSampling) -> None:
        self.rows = rows
        self.sampling = sampling
        self.first_step_at: float | None = None  # the prefill ends with the first step's token

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        new = input_ids[:, -1].tolist()
        logprobs = self.sampling.last_logprobs
        chosen = None
        if logprobs is not None:
            chosen = logprobs.gather(1, input_ids[:, -1:].to(logprobs.device)).squeeze(1).tolist()
        for index, (row, token) in enumerate(zip(self.rows, new, strict=True)):
            row.add(token, chosen[index] if chosen is not None else None)
        done = [row.finish_reason is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def run_batch(model: Any, tokenizer: Any, jobs: list[Job[Prepared]], *, device: str, dtype: torch.dtype) -> None:
    """Generate one batch; each job receives ``RowDelta`` pieces then one ``RowDone``."""
    started = time.perf_counter()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stop_ids = {i for i in tokenizer.convert_tokens_to_ids(list(STOP_STRINGS)) if i is not None}
    stop_ids |= set(_as_list(model.generation_config.eos_token_id))
    prepared = [job.prepared for job in jobs]
    batch = collate(prepared, pad_id, device, dtype)
    rows = [_Row(job, tokenizer, stop_ids, job.prepared.max_tokens) for job in jobs]
    sampling = RowSampling([p.temperature for p in prepared], [p.top_p for p in prepared])
    config = GenerationConfig(
        max_new_tokens=max(p.max_tokens for p in prepared),
        do_sample=not sampling.all_greedy,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad_id,
    )
    tracker = RowTracker(rows, sampling)
    with torch.inference_mode():
        model.generate(
            **batch,
            generation_config=config,
            logits_processor=LogitsProcessorList([sampling]),
            stopping_criteria=[tracker],
        )
    generate_s = time.perf_counter() - started
    prompt_s = (tracker.first_step_at or started) - started
    for row, job in zip(rows, jobs, strict=True):
        text = tokenizer.decode(row.tokens, skip_special_tokens=False)
        if job.live and len(text) > len(row.shown) and text.startswith(row.shown):
            job.emit(RowDelta(text[len(row.shown) :]))
        confidence = math.exp(sum(row.logprobs) / len(row.logprobs)) if row.logprobs else None
        job.emit(
            RowDone(
                text=text,
                finish_reason=row.finish_reason or "length",
                prompt_tokens=int(job.prepared.inputs["attention_mask"].sum()),
                completion_tokens=len(row.tokens),
                confidence=confidence,
                queue_s=max(0.0, started - job.prepared.ready_at),
                generate_s=generate_s,
                batch_size=len(jobs),
                prompt_s=prompt_s,
            )
        )


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [int(value)]

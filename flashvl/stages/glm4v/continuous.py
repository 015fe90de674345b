"""Continuous batching for the GLM-4.6V stage: rows join a running batch between decode steps and
leave when done.

At each step boundary, every request that arrived since the last one is read in ONE prefill forward
(left-padded, as static batches are; its 3-D rope positions computed here and passed in), its first
token taken, and its key/value rows left-padded to the running batch's width (or the batch's to
theirs) and stacked under it. Then one decode step runs every live row at once, each with its own
3-D rope position (text positions: prompt length + the image's rope delta + tokens so far), its own
sampling and its own stop. A finished row leaves at once (its cache rows are dropped, and columns
only padding once it is gone) and its client gets its answer then, not when the batch ends;
cancelled rows stop at their next token. A request alone takes the same path (a prefill of one,
then steps of one), so its solo answer and a joined row's come from the same code.

Measured on 2 shared CPU cores (bench/continuous_batching.py, README): joiners that wait together
share one prefill (4 rows together cost ~0.8x four alone); reading prompts on a second thread
beside the decode loop was slower there (the two threads only fight over the cores), and delaying
prefills to batch more of them (every 4 steps) made short answers slower, not faster.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from flashvl.stages.glm4v.batcher import Job
from flashvl.stages.glm4v.engine import STOP_STRINGS, Prepared, RowDelta, RowDone, RowSampling, _as_list, _Row, collate


@dataclass
class _Live:
    """A row of the running batch: its sampling, where its next token goes, when it joined."""

    row: _Row
    temperature: float
    top_p: float
    prompt_tokens: int
    next_position: int  # its next token's (text) rope position: prompt length + the image's rope delta
    last_token: int
    joined_at: float  # its prefill started
    prompt_s: float  # its prefill (shared with the rows read with it)
    most_rows: int = 1


@dataclass
class _Group:
    """Rows read in one prefill, ready to join: the ones still going, their cache rows and mask."""

    entries: list[_Live]
    cache: Any  # DynamicCache, rows in ``entries`` order
    mask: torch.Tensor  # [rows, width]: 1 for real positions, 0 for left padding


def _pick(logits: torch.Tensor, temperatures: list[float], top_ps: list[float]) -> tuple[list[int], list[float]]:
    """Each row's next token under its own temperature and top-p, and the token's log-probability."""
    sampling = RowSampling(temperatures, top_ps)
    scores = sampling(None, logits)  # type: ignore[arg-type]
    greedy = sampling.all_greedy
    tokens = scores.argmax(dim=-1) if greedy else torch.multinomial(scores.softmax(dim=-1), 1).squeeze(1)
    assert sampling.last_logprobs is not None
    chosen = sampling.last_logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
    return tokens.tolist(), chosen.tolist()


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class ContinuousEngine:
    """Runs continuous batches for one model: ``run(jobs, join)``, on the batcher's worker thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str,
        dtype: torch.dtype,
        max_rows: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.max_rows = max_rows
        self.stop_ids = {i for i in tokenizer.convert_tokens_to_ids(list(STOP_STRINGS)) if i is not None}
        self.stop_ids |= set(_as_list(model.generation_config.eos_token_id))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------ prefill

    def _prefill(self, jobs: list[Job[Prepared]]) -> _Group:
        """Read these requests' prompts (and images) in one forward and take their first tokens;
        rows that end with them (or were cancelled) are finished at once."""
        started = time.perf_counter()
        prepared = [job.prepared for job in jobs]
        with torch.inference_mode():
            batch = collate(prepared, self.pad_id, self.device, self.dtype)
            # The 3-D rope positions, computed here and passed in (the model would otherwise keep the
            # deltas on itself); each row's deltas give its decode positions.
            positions, deltas = self.model.model.get_rope_index(
                batch["input_ids"],
                batch["mm_token_type_ids"],
                image_grid_thw=batch.get("image_grid_thw"),
                attention_mask=batch["attention_mask"],
            )
            cache = self._new_cache()
            out = self.model(**batch, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
            tokens, logprobs = _pick(
                out.logits[:, -1].float(), [p.temperature for p in prepared], [p.top_p for p in prepared]
            )
        prompt_s = time.perf_counter() - started
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        entries: list[_Live] = []
        keep: list[int] = []
        for index, (job, p) in enumerate(zip(jobs, prepared, strict=True)):
            entry = _Live(
                _Row(job, self.tokenizer, self.stop_ids, p.max_tokens),
                p.temperature,
                p.top_p,
                int(lengths[index]),
                int(lengths[index]) + int(deltas[index]),
                tokens[index],
                started,
                prompt_s,
                len(jobs),
            )
            entry.row.add(tokens[index], logprobs[index])
            if entry.row.finish_reason is not None:
                self._finish(entry)
            else:
                entries.append(entry)
                keep.append(index)
        mask = batch["attention_mask"].to(torch.long)
        if len(keep) < len(jobs):
            chosen = torch.tensor(keep, device=mask.device, dtype=torch.long)
            mask = mask.index_select(0, chosen)
            for layer in cache.layers:
                layer.keys = layer.keys.index_select(0, chosen)
                layer.values = layer.values.index_select(0, chosen)
        return _Group(entries, cache, mask)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    # ------------------------------------------------------------ the loop

    def _finish(self, entry: _Live) -> None:
        row, job = entry.row, entry.row.job
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=False)
        if job.live and len(text) > len(row.shown) and text.startswith(row.shown):
            job.emit(RowDelta(text[len(row.shown) :]))
        job.emit(
            RowDone(
                text=text,
                finish_reason=row.finish_reason or "length",
                prompt_tokens=entry.prompt_tokens,
                completion_tokens=len(row.tokens),
                confidence=math.exp(sum(row.logprobs) / len(row.logprobs)) if row.logprobs else None,
                queue_s=max(0.0, entry.joined_at - job.prepared.ready_at),
                generate_s=time.perf_counter() - entry.joined_at,
                batch_size=entry.most_rows,
                prompt_s=entry.prompt_s,
            )
        )
        job.end()  # its client gets the answer now, not when the batch's last row is done

    def run(self, jobs: list[Job[Prepared]], join: Any) -> None:
        """Generate ``jobs`` and, between decode steps, whatever ``join(n)`` hands over (up to ``n``
        requests that arrived meanwhile); return when no row is left and none is waiting. Each job
        receives ``RowDelta`` pieces then one ``RowDone``, as with ``run_batch``."""
        batch = _Batch(self.device)
        waiting = list(jobs)
        with torch.inference_mode():
            while True:
                room = self.max_rows - len(batch.live) - len(waiting)
                if join is not None and room > 0:
                    waiting.extend(join(room))
                waiting = [job for job in waiting if not job.cancelled.is_set()]
                if waiting:
                    batch.add(self._prefill(waiting))  # every request waiting now, in one forward
                    waiting = []
                if batch.live:
                    for entry in batch.step(self.model):
                        self._finish(entry)
                    continue
                if join is None:
                    return
                waiting = list(join(self.max_rows))
                if not waiting:
                    return


class _Batch:
    """The running batch: its live rows, their key/value cache and attention mask (rows in order)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.live: list[_Live] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None

    def add(self, group: _Group) -> None:
        """Stack a prefilled group under the running rows (the narrower side is left-padded)."""
        if not group.entries:
            return
        if self.cache is None or self.mask is None:
            self.cache, self.mask = group.cache, group.mask
        else:
            width = max(self.mask.shape[1], group.mask.shape[1])
            self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(group.mask, width, 1)])
            for mine, theirs in zip(self.cache.layers, group.cache.layers, strict=True):
                mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
                mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
        self.live.extend(group.entries)

    def step(self, model: Any) -> list[_Live]:
        """One decode step for every live row; returns the rows that finished (already dropped)."""
        assert self.cache is not None and self.mask is not None
        live, rows = self.live, len(self.live)
        for entry in live:
            entry.most_rows = max(entry.most_rows, rows)
        input_ids = torch.tensor([[e.last_token] for e in live], device=self.device)
        positions = torch.tensor([e.next_position for e in live], device=self.device)
        positions = positions.view(1, rows, 1).expand(3, -1, -1)
        self.mask = torch.cat([self.mask, self.mask.new_ones((rows, 1))], dim=1)
        out = model(
            input_ids=input_ids, attention_mask=self.mask, position_ids=positions, cache=self.cache, use_cache=True
        )
        tokens, logprobs = _pick(out.logits[:, -1].float(), [e.temperature for e in live], [e.top_p for e in live])
        keep: list[int] = []
        done: list[_Live] = []
        for index, entry in enumerate(live):
            entry.row.add(tokens[index], logprobs[index])
            entry.last_token = tokens[index]
            entry.next_position += 1
            if entry.row.finish_reason is None:
                keep.append(index)
            else:
                done.append(entry)
        if done:
            self._drop(keep)
        return done

    def _drop(self, keep: list[int]) -> None:
        """Keep only these rows; columns that are padding in every remaining row go too."""
        assert self.mask is not None
        self.live = [self.live[i] for i in keep]
        if not self.live:
            self.cache, self.mask = None, None
            return
        chosen = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, chosen)
        first = int((mask.sum(dim=0) > 0).nonzero()[0])
        self.mask = mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, chosen)[:, :, first:]
            layer.values = layer.values.index_select(0, chosen)[:, :, first:]

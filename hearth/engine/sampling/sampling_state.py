"""Per-sequence sampling state on the model's device, and the per-batch metadata built from it.

Each live sequence owns a slot (a row) of two device buffers: its token history (prompt then output) and
the counts of its output tokens over the vocabulary. Both are updated incrementally with each sampled
token, on the device; the penalties read them through index tensors, never through Python lists.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.engine.scheduling.sequence import Sequence
from hearth.kernels import SamplingMetadata


def _pad_rows(rows: list[list[int]], pad_rows: list[int]) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [r + [pad] * (width - len(r)) for r, pad in zip(rows, pad_rows)]


class SamplingState:
    def __init__(self, num_slots: int, max_model_len: int, vocab_size: int, device: torch.device,
                 is_logprobs_processed: bool = False) -> None:
        self.vocab_size = vocab_size
        self.device = device
        self.is_logprobs_processed = is_logprobs_processed
        self.token_ids = torch.zeros(num_slots, max_model_len + 1, dtype=torch.int64, device=device)
        self.output_counts = torch.zeros(num_slots, vocab_size, dtype=torch.int32, device=device)

    def _arange(self, width: int) -> Tensor:
        return torch.arange(width, device=self.device).unsqueeze(0)

    def start(self, slot: int, seq: Sequence) -> None:
        """Write the history of a sequence entering `slot` (its prompt, and any output so far)."""
        history = seq.prompt_token_ids + seq.output_token_ids
        self.token_ids[slot, :len(history)] = torch.tensor(history, dtype=torch.int64, device=self.device)
        if seq.output_token_ids:
            ids = torch.tensor(seq.output_token_ids, dtype=torch.int64, device=self.device)
            self.output_counts[slot].index_add_(0, ids, torch.ones_like(ids, dtype=torch.int32))

    def fork(self, src: Sequence, dst_slot: int) -> None:
        self.token_ids[dst_slot] = self.token_ids[src.slot]
        self.output_counts[dst_slot] = self.output_counts[src.slot]

    def release(self, slot: int, seq: Sequence) -> None:
        """Return a slot to zero counts, touching only the ids the sequence produced."""
        if seq.output_token_ids:
            ids = torch.tensor(seq.output_token_ids, dtype=torch.int64, device=self.device)
            self.output_counts[slot, ids] = 0

    def record(self, slots: Tensor, columns: Tensor, token_ids: Tensor) -> None:
        """Append sampled tokens: slots, columns (history positions) and token_ids are [num_rows]."""
        self.token_ids[slots, columns] = token_ids
        self.output_counts.index_put_((slots, token_ids), torch.ones_like(token_ids, dtype=torch.int32), accumulate=True)

    def build(self, rows: list[Sequence], banned_ids: list[list[int]], bitmask: Tensor | None = None) -> SamplingMetadata:
        """Metadata for sampling one token for each sequence in `rows` (banned_ids: per row, this step)."""
        device = self.device
        params: list[SamplingParams] = [s.params for s in rows]
        num_rows = len(rows)
        is_greedy = [p.is_greedy for p in params]
        temperature = [1.0 if g else p.temperature for p, g in zip(params, is_greedy)]

        def tensor(values, dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        fields: dict = dict(
            temperature=tensor(temperature, torch.float32),
            is_greedy=tensor(is_greedy, torch.bool),
            has_greedy=any(is_greedy),
            is_all_greedy=all(is_greedy),
            has_temperature_scaling=any(t != 1.0 for t in temperature),
            stream_keys=tensor([s.stream_key for s in rows], torch.int64),
            positions=tensor([s.num_output_tokens for s in rows], torch.int64),
        )
        if any(p.logit_bias for p in params):
            ids = _pad_rows([list(p.logit_bias) or [0] for p in params], [0] * num_rows)
            values = _pad_rows([list(p.logit_bias.values()) or [0.0] for p in params], [0.0] * num_rows)
            fields.update(bias_token_ids=tensor(ids, torch.int64), bias_values=tensor(values, torch.float32))
        if any(banned_ids):
            ids = _pad_rows([b or [0] for b in banned_ids], [b[0] if b else 0 for b in banned_ids])
            fields.update(
                banned_token_ids=tensor(ids, torch.int64),
                is_banned=tensor([[bool(b)] * len(ids[0]) for b in banned_ids], torch.bool),
            )
        if bitmask is not None:
            fields.update(allowed_token_bitmask=bitmask)
        slots = tensor([s.slot for s in rows], torch.int64).unsqueeze(1)
        if any(p.frequency_penalty or p.presence_penalty for p in params):
            num_prompt = tensor([s.num_prompt_tokens for s in rows], torch.int64).unsqueeze(1)
            num_output = tensor([s.num_output_tokens for s in rows], torch.int64).unsqueeze(1)
            width = max(1, max(s.num_output_tokens for s in rows))
            # Padding repeats the row's last output id (or reads a zero count when it has none).
            cols = num_prompt + torch.minimum(self._arange(width), (num_output - 1).clamp(min=0))
            output_ids = self.token_ids[slots, cols]  # [num_rows, width]
            fields.update(
                frequency_penalty=tensor([p.frequency_penalty for p in params], torch.float32),
                presence_penalty=tensor([p.presence_penalty for p in params], torch.float32),
                output_token_ids=output_ids,
                output_token_counts=self.output_counts[slots, output_ids],
            )
        if any(p.repetition_penalty != 1.0 for p in params):
            num_tokens = tensor([s.num_tokens for s in rows], torch.int64).unsqueeze(1)
            width = max(s.num_tokens for s in rows)
            cols = torch.minimum(self._arange(width), num_tokens - 1)
            fields.update(
                repetition_penalty=tensor([p.repetition_penalty for p in params], torch.float32),
                seen_token_ids=self.token_ids[slots, cols],
            )
        is_random = [not g for g in is_greedy]
        if any(p.top_k and r for p, r in zip(params, is_random)):
            fields["top_k"] = tensor([p.top_k or self.vocab_size for p in params], torch.int64)
        if any(p.top_p < 1.0 and r for p, r in zip(params, is_random)):
            fields["top_p"] = tensor([p.top_p for p in params], torch.float32)
        if any(p.min_p > 0.0 and r for p, r in zip(params, is_random)):
            fields["min_p"] = tensor([p.min_p for p in params], torch.float32)
        truncates = [0 < p.top_k < self.vocab_size or p.top_p < 1.0 or p.min_p > 0.0 for p in params]
        fields["is_all_truncated"] = all(r and t for r, t in zip(is_random, truncates))
        # top_p without top_k measures the nucleus against the row's whole mass.
        fields["needs_total_mass"] = any(
            r and (not t or (p.top_p < 1.0 and not 0 < p.top_k < self.vocab_size))
            for p, r, t in zip(params, is_random, truncates)
        )
        if any(p.logprobs for p in params):
            fields.update(
                has_logprobs=True,
                num_top_logprobs=max(p.top_logprobs for p in params),
                is_logprobs_processed=self.is_logprobs_processed,
            )
        return SamplingMetadata(**fields)

"""Per-request sampling parameters and the SamplingMetadata a batch of them becomes.

This mirrors what the engine does with request parameters (Python scalars -> padded per-batch tensors),
written independently so that the kernel tests do not depend on engine code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from hearth.kernels import SamplingMetadata
from hearth.kernels.logits.sampling import stream_key


@dataclass(frozen=True)
class RowParams:
    """One sequence's sampling parameters, with OpenAI's defaults (every stage off)."""

    temperature: float = 1.0
    top_k: int | None = None  # None: off
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int = 0
    choice_index: int = 0
    position: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    prompt_token_ids: tuple[int, ...] = ()
    output_token_ids: tuple[int, ...] = ()
    allowed_token_ids: tuple[int, ...] | None = None  # None: unconstrained
    banned_token_ids: tuple[int, ...] = ()
    num_top_logprobs: int | None = None  # None: no logprobs

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def is_truncating(self, vocab_size: int) -> bool:
        has_top_k = self.top_k is not None and self.top_k < vocab_size
        return not self.is_greedy and (has_top_k or self.top_p < 1.0 or self.min_p > 0.0)


def _pad_rows(rows: list[list[int]], fill_for_empty: int = 0) -> torch.Tensor:
    """Pad each id list to the longest by repeating its own first id ([fill_for_empty] when empty)."""
    width = max(1, max(len(r) for r in rows))
    padded = [(r or [fill_for_empty]) for r in rows]
    return torch.tensor([r + [r[0]] * (width - len(r)) for r in padded], dtype=torch.int64)


def _bitmask(allowed: tuple[int, ...] | None, vocab_size: int) -> list[int]:
    num_words = -(-vocab_size // 32)
    words = [0] * num_words if allowed is not None else [-1] * num_words
    for token in allowed or ():
        words[token // 32] |= 1 << (token % 32)
    # Words are int32: bit 31 is the sign bit.
    return [w - (1 << 32) if w >= 1 << 31 else w for w in words]


def build_metadata(
    rows: list[RowParams],
    vocab_size: int,
    is_logprobs_processed: bool = False,
    include_every_stage: bool = False,
    device: str | torch.device = "cpu",
) -> SamplingMetadata:
    """The batch's metadata; a stage's tensors exist only when some row uses it (or include_every_stage)."""
    every = include_every_stage
    num_top = [r.num_top_logprobs for r in rows if r.num_top_logprobs is not None]
    is_greedy = [r.is_greedy for r in rows]
    kwargs: dict = {
        "temperature": torch.tensor([1.0 if r.is_greedy else r.temperature for r in rows], dtype=torch.float32),
        "is_greedy": torch.tensor(is_greedy, dtype=torch.bool),
        "has_greedy": any(is_greedy),
        "is_all_greedy": all(is_greedy),
        "has_temperature_scaling": any(not r.is_greedy and r.temperature != 1.0 for r in rows),
        "stream_keys": torch.tensor([stream_key(r.seed, r.choice_index) for r in rows], dtype=torch.int64),
        "positions": torch.tensor([r.position for r in rows], dtype=torch.int64),
        "num_top_logprobs": max(num_top, default=0),
        "has_logprobs": bool(num_top),
        "is_logprobs_processed": is_logprobs_processed,
        "is_all_truncated": all(r.is_truncating(vocab_size) for r in rows),
        "needs_total_mass": any(
            not r.is_greedy and (not r.is_truncating(vocab_size) or (r.top_p < 1.0 and (r.top_k or vocab_size) >= vocab_size))
            for r in rows
        ),
    }
    if every or any(r.logit_bias for r in rows):
        width = max(1, max(len(r.logit_bias) for r in rows))
        ids = [list(r.logit_bias) + [0] * (width - len(r.logit_bias)) for r in rows]
        values = [list(r.logit_bias.values()) + [0.0] * (width - len(r.logit_bias)) for r in rows]
        kwargs.update(bias_token_ids=torch.tensor(ids), bias_values=torch.tensor(values, dtype=torch.float32))
    if every or any(r.allowed_token_ids is not None for r in rows):
        words = [_bitmask(r.allowed_token_ids, vocab_size) for r in rows]
        kwargs.update(allowed_token_bitmask=torch.tensor(words, dtype=torch.int32))
    if every or any(r.banned_token_ids for r in rows):
        kwargs.update(
            banned_token_ids=_pad_rows([list(r.banned_token_ids) for r in rows]),
            is_banned=torch.tensor([[bool(r.banned_token_ids)] for r in rows]).expand(-1, max(
                1, max(len(r.banned_token_ids) for r in rows))).contiguous(),
        )
    if every or any(r.frequency_penalty or r.presence_penalty for r in rows):
        counters = [Counter(r.output_token_ids) for r in rows]
        ids = _pad_rows([list(c) for c in counters])
        counts = torch.tensor([[c.get(int(t), 0) for t in row] for c, row in zip(counters, ids.tolist())])
        kwargs.update(
            frequency_penalty=torch.tensor([r.frequency_penalty for r in rows], dtype=torch.float32),
            presence_penalty=torch.tensor([r.presence_penalty for r in rows], dtype=torch.float32),
            output_token_ids=ids,
            output_token_counts=counts.to(torch.int32),
        )
    if every or any(r.repetition_penalty != 1.0 for r in rows):
        seen = [sorted(set(r.prompt_token_ids) | set(r.output_token_ids)) for r in rows]
        # A row with nothing seen pads with id 0, so its penalty must be neutral.
        penalty = [r.repetition_penalty if s else 1.0 for r, s in zip(rows, seen)]
        kwargs.update(
            repetition_penalty=torch.tensor(penalty, dtype=torch.float32), seen_token_ids=_pad_rows(seen)
        )
    if every or any(r.top_k is not None and r.top_k < vocab_size and not r.is_greedy for r in rows):
        top_k = [min(r.top_k, vocab_size) if r.top_k is not None else vocab_size for r in rows]
        kwargs.update(top_k=torch.tensor(top_k, dtype=torch.int64))
    if every or any(r.top_p < 1.0 and not r.is_greedy for r in rows):
        kwargs.update(top_p=torch.tensor([r.top_p for r in rows], dtype=torch.float32))
    if every or any(r.min_p > 0.0 and not r.is_greedy for r in rows):
        kwargs.update(min_p=torch.tensor([r.min_p for r in rows], dtype=torch.float32))
    md = SamplingMetadata(**kwargs)
    return to_device(md, device)


def to_device(md: SamplingMetadata, device: str | torch.device) -> SamplingMetadata:
    """The same metadata with every tensor on `device`."""
    moved = {
        name: (value.to(device) if isinstance(value, torch.Tensor) else value)
        for name, value in md.__dict__.items()
    }
    return SamplingMetadata(**moved)

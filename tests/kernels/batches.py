"""Batches the sampler tests share: one row of each kind, LM-like and tied logits, and draw helpers."""

from __future__ import annotations

import dataclasses

import torch

from hearth.kernels import Sampler
from tests.kernels.rows import RowParams, build_metadata

VOCAB_SIZE = 1000

# One row of each kind the engine batches together.
MIXED_ROWS = [
    RowParams(temperature=0.0),
    RowParams(temperature=0.0, logit_bias={5: 3.0}, repetition_penalty=1.3, prompt_token_ids=(1, 2, 3),
              output_token_ids=(2, 9), frequency_penalty=0.5, num_top_logprobs=5),
    RowParams(temperature=0.8, seed=11),
    RowParams(temperature=0.7, top_p=0.9, seed=12, num_top_logprobs=20),
    RowParams(top_k=20, seed=13, num_top_logprobs=3),
    RowParams(temperature=1.3, min_p=0.1, seed=14),
    RowParams(temperature=1.2, repetition_penalty=1.2, frequency_penalty=0.4, presence_penalty=0.6,
              prompt_token_ids=tuple(range(0, 200, 7)), output_token_ids=(3, 3, 50, 51, 51, 51), seed=15),
    RowParams(logit_bias={0: 100.0}, seed=16),
    RowParams(logit_bias={7: -100.0, 8: 2.5, 999: 4.0}, top_p=0.5, seed=17, num_top_logprobs=0),
    RowParams(top_k=300, top_p=0.95, min_p=0.01, temperature=0.9, seed=18, num_top_logprobs=2),
    RowParams(banned_token_ids=(1, 2, 3), allowed_token_ids=tuple(range(0, 1000, 2)), seed=19),
    RowParams(top_p=1.0, top_k=VOCAB_SIZE, min_p=0.0, seed=20),  # every cut at its neutral value
    RowParams(temperature=0.5, top_p=0.3, seed=21, choice_index=2, position=17),
]


def zipf_logits(num_seqs: int, vocab_size: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    """LM-like rows: logit of rank r is -1.1 * log(r) * scale plus noise, ranks permuted per row."""
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float32)
    base = -1.1 * ranks.log() * scale
    rows = [base[torch.randperm(vocab_size, generator=generator)] for _ in range(num_seqs)]
    return torch.stack(rows) + 0.3 * torch.randn(num_seqs, vocab_size, generator=generator)


def at_position(rows: list[RowParams], position: int) -> list[RowParams]:
    return [dataclasses.replace(r, position=r.position + position) for r in rows]


def sample(logits: torch.Tensor, rows: list[RowParams], processed: bool = False):
    return Sampler()(logits, build_metadata(rows, logits.shape[1], is_logprobs_processed=processed))


def draws(logits_row: torch.Tensor, row: RowParams, num_draws: int) -> torch.Tensor:
    """Tokens of positions 0..num_draws-1 of one row's stream (one batch, one row per position)."""
    rows = [dataclasses.replace(row, position=i) for i in range(num_draws)]
    return sample(logits_row.unsqueeze(0).expand(num_draws, -1), rows).token_ids


def tied_logits(num_seqs: int, vocab_size: int, seed: int) -> torch.Tensor:
    """bf16 logits around 24, as a bf16 model emits them: steps of 0.125, so the top tokens often tie."""
    return (zipf_logits(num_seqs, vocab_size, seed=seed, scale=0.7) + 24.0).bfloat16()

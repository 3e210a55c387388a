"""Stages 2-4 of the sampler (logit_bias, min_tokens bans, bitmask, repetition, frequency/presence) in two
launches that never read what they write:

1. dense: out = float32(raw) with the bitmask's -inf, over the whole row;
2. sparse: every id some list names (bias, bans, seen, output) gets its final value, computed from the raw
   logit by applying the stages in the torch path's order. Duplicate ids (padding repeats a row's ids)
   compute the same bits from the same raw value, so their concurrent stores agree.

Float32 arithmetic as in the torch path: IEEE division (div_rn) for the repetition penalty and no fused
multiply-adds (enable_fp_fusion=False) in the frequency/presence penalty, so each logit gets the torch path's
exact value.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hearth.kernels.logits.metadata import SamplingMetadata

DENSE_BLOCK = 1024
SPARSE_BLOCK = 32


@triton.jit
def _dense_kernel(raw_ptr, out_ptr, mask_ptr, vocab_size, raw_stride, out_stride, num_words,
                  HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    # grid (num_seqs, cdiv(vocab, BLOCK)); raw [num_seqs, vocab] any float dtype -> out [num_seqs, vocab] f32
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < vocab_size
    x = tl.load(raw_ptr + row * raw_stride + cols, mask=inside).to(tl.float32)
    if HAS_MASK:
        # bitmask [num_seqs, num_words] int32, bit j of word w is token 32 w + j
        word = tl.load(mask_ptr + row * num_words + cols // 32, mask=inside, other=0)
        x = tl.where(((word >> (cols % 32)) & 1) == 0, float("-inf"), x)
    tl.store(out_ptr + row * out_stride + cols, x, mask=inside)


@triton.jit
def _final_value(t, valid, row, raw_ptr, raw_stride,
                 bias_ids_ptr, bias_vals_ptr, num_bias, ban_ids_ptr, is_banned_ptr, num_ban, mask_ptr, num_words,
                 seen_ptr, rep_ptr, num_seen, out_ids_ptr, counts_ptr, freq_ptr, pres_ptr, num_out,
                 HAS_BIAS: tl.constexpr, HAS_BAN: tl.constexpr, HAS_MASK: tl.constexpr, HAS_REP: tl.constexpr,
                 HAS_FREQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr):
    """t [BLOCK_M] token ids of one row -> their processed logits [BLOCK_M] f32."""
    x = tl.load(raw_ptr + row * raw_stride + t, mask=valid, other=0.0).to(tl.float32)
    js = tl.arange(0, BLOCK_J)
    if HAS_BIAS:
        # At most one real bias per id (padding adds 0.0 to id 0), so the sum is that bias exactly.
        bias = tl.zeros([BLOCK_M], dtype=tl.float32)
        is_biased = tl.zeros([BLOCK_M], dtype=tl.int1)
        for j0 in range(0, num_bias, BLOCK_J):
            j_in = j0 + js < num_bias
            ids = tl.load(bias_ids_ptr + row * num_bias + j0 + js, mask=j_in, other=-1)
            vals = tl.load(bias_vals_ptr + row * num_bias + j0 + js, mask=j_in, other=0.0)
            hit = t[:, None] == ids[None, :]  # [BLOCK_M, BLOCK_J]
            bias += tl.sum(tl.where(hit, vals[None, :], 0.0), axis=1)
            is_biased = is_biased | (tl.max(hit.to(tl.int32), axis=1) > 0)
        x = tl.where(is_biased, x + bias, x)
    if HAS_BAN:
        is_out = tl.zeros([BLOCK_M], dtype=tl.int1)
        for j0 in range(0, num_ban, BLOCK_J):
            j_in = j0 + js < num_ban
            ids = tl.load(ban_ids_ptr + row * num_ban + j0 + js, mask=j_in, other=-1)
            on = tl.load(is_banned_ptr + row * num_ban + j0 + js, mask=j_in, other=0) != 0
            hit = (t[:, None] == ids[None, :]) & on[None, :]
            is_out = is_out | (tl.max(hit.to(tl.int32), axis=1) > 0)
        x = tl.where(is_out, float("-inf"), x)
    if HAS_MASK:
        word = tl.load(mask_ptr + row * num_words + t // 32, mask=valid, other=-1)
        x = tl.where(((word >> (t % 32)) & 1) == 0, float("-inf"), x)
    if HAS_REP:
        is_seen = tl.zeros([BLOCK_M], dtype=tl.int1)
        for j0 in range(0, num_seen, BLOCK_J):
            ids = tl.load(seen_ptr + row * num_seen + j0 + js, mask=j0 + js < num_seen, other=-1)
            is_seen = is_seen | (tl.max((t[:, None] == ids[None, :]).to(tl.int32), axis=1) > 0)
        penalty = tl.load(rep_ptr + row)
        x = tl.where(is_seen, tl.where(x > 0, tl.math.div_rn(x, penalty), x * penalty), x)
    if HAS_FREQ:
        count = tl.full([BLOCK_M], -1, dtype=tl.int32)  # -1: not in the output list
        for j0 in range(0, num_out, BLOCK_J):
            j_in = j0 + js < num_out
            ids = tl.load(out_ids_ptr + row * num_out + j0 + js, mask=j_in, other=-1)
            counts = tl.load(counts_ptr + row * num_out + j0 + js, mask=j_in, other=-1)
            count = tl.maximum(count, tl.max(tl.where(t[:, None] == ids[None, :], counts[None, :], -1), axis=1))
        c = tl.maximum(count, 0).to(tl.float32)
        penalty = c * tl.load(freq_ptr + row) + (c > 0).to(tl.float32) * tl.load(pres_ptr + row)
        x = tl.where(count >= 0, x - penalty, x)
    return x


@triton.jit
def _sparse_kernel(raw_ptr, out_ptr, raw_stride, out_stride,
                   bias_ids_ptr, bias_vals_ptr, num_bias, ban_ids_ptr, is_banned_ptr, num_ban, mask_ptr, num_words,
                   seen_ptr, rep_ptr, num_seen, out_ids_ptr, counts_ptr, freq_ptr, pres_ptr, num_out,
                   HAS_BIAS: tl.constexpr, HAS_BAN: tl.constexpr, HAS_MASK: tl.constexpr, HAS_REP: tl.constexpr,
                   HAS_FREQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr):
    # grid (num_seqs,): each id of each list [num_seqs, L] is a target whose final value is stored
    row = tl.program_id(0).to(tl.int64)
    ms = tl.arange(0, BLOCK_M)
    for which in tl.static_range(4):
        if which == 0:
            ids_ptr, width, has = bias_ids_ptr, num_bias, HAS_BIAS
        elif which == 1:
            ids_ptr, width, has = ban_ids_ptr, num_ban, HAS_BAN
        elif which == 2:
            ids_ptr, width, has = seen_ptr, num_seen, HAS_REP
        else:
            ids_ptr, width, has = out_ids_ptr, num_out, HAS_FREQ
        if has:
            for m0 in range(0, width, BLOCK_M):
                valid = m0 + ms < width
                t = tl.load(ids_ptr + row * width + m0 + ms, mask=valid, other=0)
                x = _final_value(t, valid, row, raw_ptr, raw_stride, bias_ids_ptr, bias_vals_ptr, num_bias,
                                 ban_ids_ptr, is_banned_ptr, num_ban, mask_ptr, num_words, seen_ptr, rep_ptr,
                                 num_seen, out_ids_ptr, counts_ptr, freq_ptr, pres_ptr, num_out, HAS_BIAS, HAS_BAN,
                                 HAS_MASK, HAS_REP, HAS_FREQ, BLOCK_M, BLOCK_J)
                tl.store(out_ptr + row * out_stride + t, x, mask=valid)


def _list(t: Tensor | None, like: Tensor, dtype: torch.dtype) -> tuple[Tensor, int]:
    """A contiguous [num_seqs, L] list and L; a one-element placeholder when absent."""
    if t is None:
        return torch.zeros(1, dtype=dtype, device=like.device), 0
    return t.contiguous(), t.shape[1]


def apply_processing(logits: Tensor, md: SamplingMetadata, out: Tensor | None = None) -> Tensor:
    """logits [num_seqs, vocab] (any float dtype, unchanged) -> processed float32 logits [num_seqs, vocab].

    `out` (float32, same shape, not logits' storage) receives the result when given. No host sync."""
    num_seqs, vocab_size = logits.shape
    raw = logits if logits.stride(1) == 1 else logits.contiguous()
    if out is None:
        out = torch.empty(num_seqs, vocab_size, dtype=torch.float32, device=logits.device)
    bias_ids, num_bias = _list(md.bias_token_ids, raw, torch.int64)
    bias_vals, _ = _list(md.bias_values, raw, torch.float32)
    ban_ids, num_ban = _list(md.banned_token_ids, raw, torch.int64)
    is_banned, _ = _list(md.is_banned.to(torch.int8) if md.is_banned is not None else None, raw, torch.int8)
    mask, num_words = _list(md.allowed_token_bitmask, raw, torch.int32)
    seen, num_seen = _list(md.seen_token_ids, raw, torch.int64)
    out_ids, num_out = _list(md.output_token_ids, raw, torch.int64)
    counts, _ = _list(md.output_token_counts.to(torch.int32) if md.output_token_counts is not None else None, raw,
                      torch.int32)
    dummy = torch.ones(1, dtype=torch.float32, device=raw.device)
    rep = md.repetition_penalty if md.repetition_penalty is not None else dummy
    freq = md.frequency_penalty if md.frequency_penalty is not None else dummy
    pres = md.presence_penalty if md.presence_penalty is not None else dummy
    has_mask = md.allowed_token_bitmask is not None
    _dense_kernel[(num_seqs, triton.cdiv(vocab_size, DENSE_BLOCK))](
        raw, out, mask, vocab_size, raw.stride(0), out.stride(0), num_words, HAS_MASK=has_mask, BLOCK=DENSE_BLOCK)
    flags = dict(HAS_BIAS=num_bias > 0, HAS_BAN=num_ban > 0, HAS_MASK=has_mask, HAS_REP=num_seen > 0,
                 HAS_FREQ=num_out > 0)
    if num_bias or num_ban or num_seen or num_out:
        _sparse_kernel[(num_seqs,)](
            raw, out, raw.stride(0), out.stride(0), bias_ids, bias_vals.to(torch.float32), num_bias, ban_ids,
            is_banned, num_ban, mask, num_words, seen, rep.float().contiguous(), num_seen, out_ids, counts,
            freq.float().contiguous(), pres.float().contiguous(), num_out, **flags, BLOCK_M=SPARSE_BLOCK,
            BLOCK_J=SPARSE_BLOCK, enable_fp_fusion=False)
    return out

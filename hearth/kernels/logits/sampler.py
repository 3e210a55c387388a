"""The sampler: one batched pass from logits to next tokens and their logprobs."""

from __future__ import annotations

import torch
from torch import Tensor

from hearth.kernels.logits.blockwise import (
    BLOCK_SIZE,
    argmax_blockwise,
    block_reduce,
    refresh_block_max,
    topk_blockwise,
)
from hearth.kernels.logits.logit_bias import apply_logit_bias
from hearth.kernels.logits.logprobs import MIN_TOP_COMPUTED, LogprobStats, candidate_logprob_stats, logprob_stats
from hearth.kernels.logits.metadata import SamplerOutput, SamplingMetadata
from hearth.kernels.logits.penalties import apply_frequency_presence_penalties, apply_repetition_penalty
from hearth.kernels.logits.sampling import block_cumulative_mass, draw_from_candidates, draw_from_probs, stream_uniforms
from hearth.kernels.logits.token_mask import apply_banned_tokens, apply_token_bitmask
from hearth.kernels.logits.truncation import INITIAL_CANDIDATES, is_truncated, select_candidates


class Sampler:
    """logits [num_seqs, vocab] + SamplingMetadata -> SamplerOutput, every row with its own parameters.

    Pipeline, in order (a stage no row uses is skipped for the whole batch):
      1. raw logprob statistics: log_softmax of the unmodified logits (when raw logprobs are asked for)
      2. logit_bias: add the row's sparse bias
      3. token masks: min_tokens bans and the constrained-decoding bitmask set logits to -inf
      4. penalties: repetition (prompt + output), then frequency and presence (output so far)
      5. greedy rows: argmax of the processed logits, ties to the lowest id
      6. temperature, softmax: the whole row's distribution, for rows that need it (no truncation, top_p
         without top_k, processed logprobs); truncated rows temper only their candidates
      7. truncation: top_k, top_p (over the top_k survivors), min_p
      8. draw: inverse CDF of the kept distribution at one uniform per row, a pure function of
         (stream key, position)
      9. logprobs: of the chosen token and the top alternatives, raw (stage 1) or processed
         (the distribution of stages 2-7; for greedy rows, stages 2-4)

    On CUDA (backend "auto") the whole-vocabulary passes run as Triton kernels (hearth.kernels.triton), with the
    same stages and the same splitmix64 stream.

    Memory: the whole-vocabulary passes run in two [num_seqs, vocab] float32 buffers kept across calls
    (the working logits and the probabilities), so the working set stays small enough for the CPU's cache
    and no call page-faults fresh memory in. A caller that hands over float32 logits it no longer needs
    (is_logits_owned) saves the copy into the first buffer.
    """

    def __init__(self, initial_candidates: int = INITIAL_CANDIDATES, backend: str = "auto") -> None:
        """backend: "torch" (these ops), "triton" (hearth.kernels.triton.pipeline: its whole-vocabulary passes in
        Triton) or "auto": triton for CUDA logits when it is importable (and HEARTH_TRITON is not 0)."""
        if backend not in ("auto", "torch", "triton"):
            raise ValueError(f"backend must be auto, torch or triton; got {backend!r}")
        self.initial_candidates = initial_candidates
        self.backend = backend
        self._storage: dict[str, Tensor] = {}

    def _is_triton(self, logits: Tensor) -> bool:
        if self.backend != "auto":
            return self.backend == "triton"
        if not logits.is_cuda:
            return False
        from hearth.kernels import triton as triton_kernels

        return triton_kernels.is_available()

    def _buffer(self, name: str, like: Tensor) -> Tensor:
        """A float32 tensor shaped like `like`, backed by storage reused across calls."""
        numel = like.numel()
        storage = self._storage.get(name)
        if storage is None or storage.numel() < numel or storage.device != like.device:
            storage = self._storage[name] = torch.empty(numel, dtype=torch.float32, device=like.device)
        return storage[:numel].view(like.shape)

    def __call__(self, logits: Tensor, md: SamplingMetadata, *, is_logits_owned: bool = False) -> SamplerOutput:
        if self._is_triton(logits):
            from hearth.kernels.triton.pipeline import sample

            return sample(logits, md, self.initial_candidates, self._processed_output)
        wants_raw = md.has_logprobs and not md.is_logprobs_processed
        wants_processed = md.has_logprobs and md.is_logprobs_processed
        num_top = max(md.num_top_logprobs, MIN_TOP_COMPUTED)
        has_processing = self._has_processing(md)
        if logits.dtype != torch.float32:
            logits = self._buffer("logits", logits).copy_(logits)
            is_logits_owned = True
        # Stages 2-4 write into a working copy, unless the caller handed its logits over; the caller's
        # logits are never written otherwise. A model's float32 logits computed under inference mode cannot
        # be written outside it: they are copied like a caller's.
        is_writable = not logits.is_inference() or torch.is_inference_mode_enabled()
        needs_copy = has_processing and not (is_logits_owned and is_writable)

        raw_stats = raw_block_max = None
        if wants_raw:
            raw_block_max = block_reduce(logits, "max")
            top_ids = topk_blockwise(logits, num_top, block_max=raw_block_max)[1]
            # The raw softmax is only read for its statistics: it borrows the buffer the working copy
            # overwrites next, which keeps the working set (and cache misses) down.
            scratch = self._buffer("logits" if needs_copy else "probs", logits)
            raw_probs = torch.ops.aten._softmax.out(logits, 1, False, out=scratch)
            raw_stats = logprob_stats(logits, raw_probs, top_ids, md.num_top_logprobs)
        work = self._buffer("logits", logits).copy_(logits) if needs_copy else logits
        # The ids stages 2-4 touch matter only for raw logprobs (restoring the chosen token's raw logit,
        # refreshing the raw block maxima).
        touched_ids = self._touched_ids(md) if wants_raw else None
        raw_touched = work.gather(1, touched_ids) if touched_ids is not None else None
        if has_processing:
            work = self._process(work, md)
        # The bitmask may change any id: the block maxima are then read again whole.
        block_max = self._block_max(work, touched_ids if md.allowed_token_bitmask is None else None, raw_block_max,
                                    md)

        greedy_ids = argmax_blockwise(work, block_max=block_max) if md.has_greedy else None
        if md.is_all_greedy and not wants_processed:
            return self._raw_output(greedy_ids, work, raw_stats, touched_ids, raw_touched)

        uniforms = stream_uniforms(md.stream_keys, md.positions)
        probs = block_cum = None
        if md.needs_total_mass or wants_processed:
            probs = self._buffer("probs", work)
            if md.has_temperature_scaling:
                torch.div(work, md.temperature.unsqueeze(1), out=probs)
            else:
                probs.copy_(work)
            probs = torch.ops.aten._softmax.out(probs, 1, False, out=probs)
            block_cum = block_cumulative_mass(probs)  # [num_seqs, num_blocks] float64

        candidates = is_row_truncated = None
        if md.has_truncation:
            is_row_truncated = is_truncated(work.shape[1], md.top_k, md.top_p, md.min_p) & ~md.is_greedy
            candidates = select_candidates(work, md.temperature, probs, block_cum, is_row_truncated,
                                           md.top_k, md.top_p, md.min_p, self.initial_candidates, block_max)
            token_ids = draw_from_candidates(candidates.weights, candidates.token_ids, candidates.keep_len,
                                             uniforms)
            # Without probs every random row truncates (the rest are greedy, replaced below).
            if not md.is_all_truncated and probs is not None:
                token_ids = torch.where(is_row_truncated, token_ids, draw_from_probs(probs, block_cum, uniforms))
        else:
            token_ids = draw_from_probs(probs, block_cum, uniforms)
        if greedy_ids is not None:
            token_ids = torch.where(md.is_greedy, greedy_ids, token_ids)

        if not wants_processed:
            return self._raw_output(token_ids, work, raw_stats, touched_ids, raw_touched)
        return self._processed_output(token_ids, work, probs, block_max, candidates, is_row_truncated, md)

    @staticmethod
    def _has_processing(md: SamplingMetadata) -> bool:
        return any(t is not None for t in (md.bias_token_ids, md.banned_token_ids, md.allowed_token_bitmask,
                                            md.repetition_penalty, md.frequency_penalty))

    @staticmethod
    def _touched_ids(md: SamplingMetadata) -> Tensor:
        """[num_seqs, M] every id stages 2-4 may change, but for the bitmask's (never a token that can be
        chosen)."""
        ids = [t for t in (md.bias_token_ids, md.banned_token_ids, md.seen_token_ids, md.output_token_ids)
               if t is not None]
        if not ids:
            return torch.empty(md.num_seqs, 0, dtype=torch.int64, device=md.temperature.device)
        return torch.cat(ids, dim=1)

    @staticmethod
    def _process(logits: Tensor, md: SamplingMetadata) -> Tensor:
        """Stages 2-4, in place on the working logits."""
        if md.bias_token_ids is not None:
            logits = apply_logit_bias(logits, md.bias_token_ids, md.bias_values)
        if md.banned_token_ids is not None:
            logits = apply_banned_tokens(logits, md.banned_token_ids, md.is_banned)
        if md.allowed_token_bitmask is not None:
            logits = apply_token_bitmask(logits, md.allowed_token_bitmask)
        if md.repetition_penalty is not None:
            logits = apply_repetition_penalty(logits, md.seen_token_ids, md.repetition_penalty)
        if md.frequency_penalty is not None:
            logits = apply_frequency_presence_penalties(
                logits, md.output_token_ids, md.output_token_counts, md.frequency_penalty, md.presence_penalty
            )
        return logits

    @staticmethod
    def _block_max(logits: Tensor, touched_ids: Tensor | None, raw_block_max: Tensor | None,
                   md: SamplingMetadata) -> Tensor | None:
        """Block maxima of the processed logits, from the raw ones when only a few ids changed; None when
        nothing will use them."""
        if not (md.has_greedy or md.has_truncation or (md.has_logprobs and md.is_logprobs_processed)):
            return None
        if raw_block_max is None or touched_ids is None:
            return block_reduce(logits, "max")
        if touched_ids.shape[1] == 0:
            return raw_block_max
        # Re-reading a touched block costs a gather: worth it only for a small share of the row.
        if touched_ids.shape[1] * BLOCK_SIZE * 8 > logits.shape[1]:
            return block_reduce(logits, "max")
        return refresh_block_max(raw_block_max, logits, touched_ids)

    @staticmethod
    def _raw_output(token_ids: Tensor, logits: Tensor, stats: LogprobStats | None, touched_ids: Tensor | None,
                    raw_touched: Tensor | None) -> SamplerOutput:
        if stats is None:
            return SamplerOutput(token_ids=token_ids)
        # The chosen token's raw logit: the processed value, unless stages 2-4 changed it (then the saved
        # raw value). The bitmask never changes a token that can be chosen.
        chosen = logits.gather(1, token_ids.unsqueeze(1)).squeeze(1)
        if raw_touched is not None and raw_touched.shape[1]:
            is_hit = touched_ids == token_ids.unsqueeze(1)
            saved = raw_touched.gather(1, is_hit.to(torch.int8).argmax(1, keepdim=True)).squeeze(1)
            chosen = torch.where(is_hit.any(1), saved, chosen)
        return SamplerOutput(
            token_ids=token_ids,
            logprobs=chosen - stats.lse,
            top_token_ids=stats.top_token_ids,
            top_logprobs=stats.top_logprobs,
        )

    def _processed_output(self, token_ids: Tensor, logits: Tensor, probs: Tensor, block_max: Tensor,
                          candidates, is_row_truncated: Tensor | None, md: SamplingMetadata) -> SamplerOutput:
        """Logprobs of the processed distribution: tempered logits (logits / T) against probs."""
        num_top = max(md.num_top_logprobs, MIN_TOP_COMPUTED)
        # Temperature keeps each row's order, so the processed logits rank the tempered distribution.
        top_ids = topk_blockwise(logits, num_top, block_max=block_max)[1]
        temperature = md.temperature.unsqueeze(1)
        first = top_ids[:, :1]
        lse = (logits.gather(1, first) / temperature - probs.gather(1, first).log()).squeeze(1)
        chosen = (logits.gather(1, token_ids.unsqueeze(1)) / temperature).squeeze(1) - lse
        top = top_ids[:, :md.num_top_logprobs]
        top_logprobs = logits.gather(1, top) / temperature - lse.unsqueeze(1)
        if candidates is None:
            return SamplerOutput(token_ids=token_ids, logprobs=chosen, top_token_ids=top, top_logprobs=top_logprobs)
        truncated = candidate_logprob_stats(candidates, md.temperature, md.num_top_logprobs)
        rows = is_row_truncated.unsqueeze(1)
        return SamplerOutput(
            token_ids=token_ids,
            logprobs=torch.where(is_row_truncated, truncated.token_logprobs(token_ids, candidates.token_ids), chosen),
            top_token_ids=torch.where(rows, truncated.top_token_ids, top),
            top_logprobs=torch.where(rows, truncated.top_logprobs, top_logprobs),
        )

"""LLMEngine: requests in, one token per live sequence per step() out.

step() = schedule -> forward (one flat batch of decode rows and prefill chunks) -> sample (one batched
pass over every sampled row) -> detokenize, check stops, free what finished. n choices share one prefill:
the prompt's sequence forks into n when its last prompt chunk has run, all n rows sampling from the same
logits with their own streams.
"""

from __future__ import annotations

import logging
import secrets
import time

import torch

from hearth.engine.config import EngineConfig
from hearth.engine.loading.loader import LoadedModel, load_model
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.model.model_runner import ModelRunner
from hearth.engine.output.detokenizer import IncrementalDetokenizer
from hearth.engine.output.outputs import ChoiceDelta, RequestOutput
from hearth.engine.output.token_text import TokenText
from hearth.engine.request_state import ContextLengthError, RequestState, check_request
from hearth.engine.runtime import configure_host_allocator
from hearth.engine.sampling.forced_tokens import force_json_endings, force_scored_tokens
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.engine.sampling.sampling_state import SamplingState
from hearth.engine.scheduling.block_allocator import BlockAllocator
from hearth.engine.scheduling.prefix_cache import PrefixCache
from hearth.engine.scheduling.scheduler import ScheduledChunk, Scheduler, SchedulerConfig
from hearth.engine.scheduling.sequence import FinishReason, Sequence, TokenLogprobs
from hearth.engine.worker import open_group, sized_kv_cache
from hearth.kernels import Sampler, SamplerOutput

logger = logging.getLogger(__name__)

__all__ = ["ContextLengthError", "LLMEngine", "RequestState"]  # the request's types live in request_state


class LLMEngine:
    def __init__(self, config: EngineConfig, entry: ModelEntry | None = None, loaded: LoadedModel | None = None) -> None:
        configure_host_allocator()
        if loaded is None:
            if entry is None:
                raise ValueError("LLMEngine needs a model entry or a loaded model")
            loaded = load_model(entry, config, open_group(config, entry))
        self.config = config
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.max_model_len = loaded.max_model_len
        self.vocab_size = loaded.vocab_size
        # Per process: under tensor parallelism each rank's cache holds its own KV heads (loaded.num_kv_heads).
        num_blocks, self.kv_cache = sized_kv_cache(config, loaded)
        if num_blocks * config.block_size < self.max_model_len:
            raise ValueError(
                f"kv_cache_memory_gib={config.kv_cache_memory_gib} holds {num_blocks * config.block_size} tokens, "
                f"fewer than max_model_len={self.max_model_len}; raise the KV budget or lower max_model_len"
            )
        # The transformers fallback keeps its own per-sequence cache: nothing there to share.
        self.prefix_cache = PrefixCache() if config.enable_prefix_caching and loaded.is_native else None
        self.allocator = BlockAllocator(num_blocks, self.prefix_cache)
        self.runner = ModelRunner(loaded, self.kv_cache, config.block_size, config.prefill_chunk_size)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                prefill_chunk_size=config.prefill_chunk_size,
                block_size=config.block_size,
                num_watermark_blocks=max(1, num_blocks // 100),
                has_batch_invariant_kv=self.runner.attends_rows_alone and loaded.model.has_row_count_invariant_layers,
            ),
            self.allocator,
        )
        self.sampling_state = SamplingState(
            config.max_num_seqs, self.max_model_len, self.vocab_size, loaded.device,
            is_logprobs_processed=config.logprobs_mode == "processed",
        )
        self.sampler = Sampler()
        self.token_text = TokenText(self.tokenizer)
        self._grammar = None
        self.requests: dict[str, RequestState] = {}
        self._next_seq_id = 0
        self._started_seqs: set[int] = set()
        self.num_preemptions = 0

    # ---- requests -------------------------------------------------------------------------------

    @property
    def grammar(self):
        """The constrained-decoding backend (hearth.engine.output.structured_output), built on first use."""
        if self._grammar is None:
            from hearth.engine.output.structured_output import GrammarBackend

            self._grammar = GrammarBackend(self.tokenizer, self.vocab_size, self.loaded.eos_token_ids)
        return self._grammar

    def _new_sequence(self, state: RequestState, prompt: list[int], choice_index: int) -> Sequence:
        from hearth.kernels.logits.sampling import stream_key

        params = state.params
        self._next_seq_id += 1
        return Sequence(
            seq_id=self._next_seq_id,
            request_id=state.request_id,
            choice_index=choice_index,
            prompt_token_ids=prompt,
            params=params,
            stream_key=stream_key(state.seed, choice_index),
            max_tokens=params.max_tokens or self.max_model_len - len(prompt),
            detokenizer=IncrementalDetokenizer(self.tokenizer.backend_tokenizer, params.stop),
            matcher=self.grammar.new_matcher(params.constraint) if params.constraint is not None else None,
        )

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        num_prompt = len(prompt_token_ids)
        check_request(params, num_prompt, vocab_size=self.vocab_size, max_model_len=self.max_model_len,
                      max_num_seqs=self.config.max_num_seqs, logprobs_mode=self.config.logprobs_mode)
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        state = RequestState(request_id, params, seed, num_prompt)
        if params.is_scoring:
            # Teacher forcing: the first token is the prompt, each next one is forced as an output token,
            # so its logprob is read exactly as a generated token's is (a forward that returned every
            # prompt row's logits would score in one prefill instead of one step a token).
            parent = self._new_sequence(state, list(prompt_token_ids[:1]), 0)
            parent.forced_token_ids = list(prompt_token_ids[1:])
            parent.max_tokens = len(parent.forced_token_ids)
        else:
            parent = self._new_sequence(state, list(prompt_token_ids), 0)
        parent.num_pending_forks = params.n - 1
        state.seqs.append(parent)
        self.requests[request_id] = state
        self.scheduler.add(parent)

    def abort_request(self, request_id: str) -> None:
        state = self.requests.pop(request_id, None)
        if state is None:
            return
        for seq in state.seqs:
            if not seq.is_finished:
                self._finish(seq, FinishReason.ABORT)

    @property
    def failure(self) -> str | None:
        """Why the engine cannot step any more (a tensor-parallel rank died or fell out of step); None
        while it can. A failed engine is to be closed and its process ended, not retried."""
        return self.runner.failure

    def close(self) -> None:
        """Stop the other tensor-parallel ranks, if any (no-op with one process)."""
        self.runner.close()

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def stats(self) -> dict[str, int | float | bool]:
        """Live requests and sequences, KV cache blocks in use (cached blocks no sequence holds are not),
        and the prefix cache: blocks cached, prompt tokens looked up and reused (for /health and tests)."""
        cache = self.prefix_cache
        return {
            "num_requests": len(self.requests),
            "num_running_seqs": len(self.scheduler.running),
            "num_waiting_seqs": len(self.scheduler.waiting),
            "kv_blocks_total": self.allocator.num_blocks,
            "kv_blocks_used": self.allocator.num_blocks - self.allocator.num_free,
            "num_preemptions": self.num_preemptions,
            "is_prefix_caching": cache is not None,
            "prefix_cache_blocks": cache.num_cached if cache else 0,
            "prefix_cache_queried_tokens": cache.num_queried_tokens if cache else 0,
            "prefix_cache_hit_tokens": cache.num_hit_tokens if cache else 0,
            "prefix_cache_hit_rate": round(cache.hit_rate, 4) if cache else 0.0,
        }

    # ---- the step -------------------------------------------------------------------------------

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
        seq.finish_reason = reason
        seq.error = error
        if seq.slot is not None and seq.seq_id in self._started_seqs:
            self.sampling_state.release(seq.slot, seq)
        self._started_seqs.discard(seq.seq_id)
        self.scheduler.finish(seq)
        if not self.loaded.is_native:
            self.loaded.model.drop(seq.seq_id)

    def _fork(self, parent: Sequence) -> list[Sequence]:
        state = self.requests[parent.request_id]
        children = []
        for _ in range(parent.num_pending_forks):
            child = self._new_sequence(state, parent.prompt_token_ids, len(state.seqs))
            self.scheduler.fork(parent, child)
            self.sampling_state.fork(parent, child.slot)
            self._started_seqs.add(child.seq_id)
            if not self.loaded.is_native:
                self.loaded.model.fork(parent.seq_id, child.seq_id)
            state.seqs.append(child)
            children.append(child)
        parent.num_pending_forks = 0
        return children

    def _stop_token_ids(self, params: SamplingParams) -> set[int]:
        ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            ids.update(self.loaded.eos_token_ids)
        return ids

    def step(self) -> list[RequestOutput]:
        sched = self.scheduler.schedule()
        self.num_preemptions += len(sched.preempted)
        if not self.loaded.is_native:
            for seq in sched.preempted:
                self.loaded.model.drop(seq.seq_id)
        if not sched.chunks:
            return []
        chunks = self.runner.order(sched.chunks)
        now = time.monotonic()
        for chunk in chunks:
            state = self.requests.get(chunk.seq.request_id)
            if state is not None and state.first_scheduled_time is None:
                state.first_scheduled_time = now
            if chunk.seq.seq_id not in self._started_seqs:
                self.sampling_state.start(chunk.seq.slot, chunk.seq)
                self._started_seqs.add(chunk.seq.seq_id)
        try:
            logits = self.runner.execute(chunks, sched.block_copies)
            self.scheduler.record_computed(chunks)
            rows, logit_rows = self._sample_rows(chunks)
            if not rows:  # only prefill chunks that do not reach the end of their prompt
                return []
            out = self._sample(logits, rows, logit_rows)
        except Exception as exc:  # a failed step fails its requests, never the engine...
            if self.failure is not None:  # ...unless the ranks are no longer in step: then the caller stops
                raise
            logger.exception("engine step failed")
            return self._fail([c.seq for c in chunks], f"internal error in the engine step: {exc}")
        return self._process(rows, out)

    def _sample_rows(self, chunks: list[ScheduledChunk]) -> tuple[list[Sequence], list[int]]:
        rows: list[Sequence] = []
        logit_rows: list[int] = []
        for index, chunk in enumerate(c for c in chunks if c.is_sampled):
            group = [chunk.seq] + (self._fork(chunk.seq) if chunk.seq.num_pending_forks else [])
            rows.extend(group)
            logit_rows.extend([index] * len(group))
        return rows, logit_rows

    def _sample(self, logits: torch.Tensor, rows: list[Sequence], logit_rows: list[int]) -> SamplerOutput:
        banned = []
        for seq in rows:
            is_short = seq.num_output_tokens < seq.params.min_tokens
            banned.append(sorted(self._stop_token_ids(seq.params)) if is_short else [])
        bitmask = None
        if any(seq.matcher is not None for seq in rows):
            bitmask = self.grammar.fill_bitmask([seq.matcher for seq in rows], logits.device)
            force_json_endings(rows, bitmask, self.tokenizer, self.max_model_len)
        if any(seq.forced_token_ids for seq in rows):
            bitmask = force_scored_tokens(rows, bitmask, self.vocab_size)
        if bitmask is not None:
            bitmask = bitmask.to(logits.device)
        md = self.sampling_state.build(rows, banned, bitmask)
        if logit_rows != list(range(logits.shape[0])):  # n > 1: choices share their prompt's logits row
            logits = logits.index_select(0, torch.tensor(logit_rows, dtype=torch.int64, device=logits.device))
        # The logits are this step's own: the sampler may work in them in place.
        out = self.sampler(logits, md, is_logits_owned=True)
        slots = torch.tensor([s.slot for s in rows], dtype=torch.int64, device=logits.device)
        columns = torch.tensor([s.num_tokens for s in rows], dtype=torch.int64, device=logits.device)
        self.sampling_state.record(slots, columns, out.token_ids)
        return out

    def _fail(self, seqs: list[Sequence], message: str) -> list[RequestOutput]:
        outputs = []
        for request_id in dict.fromkeys(s.request_id for s in seqs):
            state = self.requests.pop(request_id, None)
            if state is None:
                continue
            for seq in state.seqs:
                if not seq.is_finished:
                    self._finish(seq, FinishReason.ERROR, message)
            outputs.append(RequestOutput(request_id, [], state.num_prompt_tokens, state.num_output_tokens, True,
                                         error=message))
        return outputs

    def _process(self, rows: list[Sequence], out: SamplerOutput) -> list[RequestOutput]:
        token_ids = out.token_ids.tolist()
        logprobs = out.logprobs.tolist() if out.logprobs is not None else None
        top_ids = out.top_token_ids.tolist() if out.top_token_ids is not None else None
        top_lps = out.top_logprobs.tolist() if out.top_logprobs is not None else None
        deltas: dict[str, list[ChoiceDelta]] = {}
        failed: list[Sequence] = []
        for row, seq in enumerate(rows):
            if seq.is_finished:
                continue
            try:
                delta = self._append(seq, token_ids[row], row, logprobs, top_ids, top_lps)
            except Exception as exc:
                logger.exception("processing a token failed")
                seq.error = str(exc)
                failed.append(seq)
                continue
            deltas.setdefault(seq.request_id, []).append(delta)
        outputs = self._fail(failed, f"internal error while processing output: {failed[0].error}") if failed else []
        for request_id, choice_deltas in deltas.items():
            state = self.requests.get(request_id)
            if state is None:
                continue
            finished = state.is_finished
            outputs.append(RequestOutput(
                request_id, choice_deltas, state.num_prompt_tokens, state.num_output_tokens, finished,
                num_cached_tokens=state.seqs[0].num_cached_tokens or 0,
                first_scheduled_time=state.first_scheduled_time,
            ))
            if finished:
                del self.requests[request_id]
        return outputs

    def _append(self, seq: Sequence, token_id: int, row: int, logprobs, top_ids, top_lps) -> ChoiceDelta:
        params = seq.params
        seq.output_token_ids.append(token_id)
        delta = ChoiceDelta(index=seq.choice_index, token_ids=[token_id])
        reason = None
        if seq.matcher is not None and not seq.matcher.is_terminated() and not seq.matcher.accept_token(token_id):
            raise RuntimeError(f"token {token_id} violates the request's grammar")
        if token_id in self._stop_token_ids(params):
            # An answer closed early to fit its budget reports the budget.
            reason = FinishReason.LENGTH if seq.is_ending_forced else FinishReason.STOP
        else:
            if logprobs is not None and params.logprobs:
                top = list(zip(top_ids[row][:params.top_logprobs], top_lps[row][:params.top_logprobs]))
                record = TokenLogprobs(token_id, logprobs[row], top)
                seq.logprobs.append(record)
                delta.logprobs.append(record)
            if seq.detokenizer.append(token_id, check_stop=seq.num_output_tokens >= params.min_tokens):
                reason = FinishReason.STOP
            elif seq.num_output_tokens >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
                reason = FinishReason.LENGTH
        delta.text = seq.detokenizer.release(is_final=reason is not None)
        if reason is not None:
            delta.finish_reason = reason.value
            self._finish(seq, reason)
        return delta

"""One completion request over the engine: each prompt scored (echo with logprobs) and then generated
from, the prompts side by side; the engine's outputs gathered into the text_completion body, or into the
chunks a stream sends as they come."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, NamedTuple

from hearth.engine.output.outputs import RequestOutput
from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.server.chat.adapter import ChatAdapter, ChoiceState
from hearth.server.completions.logprobs import LegacyLogprobs
from hearth.server.completions.plan import CompletionPlan
from hearth.server.core.merge import merged
from hearth.server.errors import APIError

# request id, prompt token ids, params -> the engine's outputs for that request.
Generate = Callable[[str, list[int], SamplingParams], AsyncIterator[RequestOutput]]
SCORED, GENERATED = "scored", "generated"


class EngineRequest(NamedTuple):
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


class CompletionRun:
    def __init__(self, adapter: ChatAdapter, plan: CompletionPlan) -> None:
        self.adapter = adapter
        self.plan = plan
        self.states = [[ChoiceState() for _ in range(plan.best_of)] for _ in plan.prompts]
        self.scored = [LegacyLogprobs(adapter.token_text) for _ in plan.prompts]
        # Per prompt and choice: the choice's logprobs so far (the prompt's when echoed, then its own).
        self.logprobs: list[list[LegacyLogprobs]] = [[] for _ in plan.prompts]
        self.num_cached_tokens = 0

    # ---- the engine requests ----------------------------------------------------------------------

    def outputs(self, generate: Generate) -> AsyncIterator[tuple[int, tuple[str, RequestOutput | None]]]:
        """(prompt index, (SCORED or GENERATED, output)): each prompt's scoring outputs, then (None) the end
        of its scoring, then its generation's outputs."""
        return merged([self._prompt_outputs(index, generate) for index in range(len(self.plan.prompts))])

    def engine_requests(self, index: int) -> tuple[EngineRequest | None, EngineRequest | None]:
        """Prompt `index`'s engine requests, run one after the other: its scoring (None when the prompt is
        not scored) and its generation (None at max_tokens 0). Once the scoring has ended (or at once
        when there is none), add(index, SCORED, None) is called before any generated output."""
        prompt = list(self.plan.prompts[index].token_ids)
        request_id = f"{self.plan.request_id}-{index}"
        scoring = generation = None
        if self.plan.scores_prompt and len(prompt) > 1:
            scoring = EngineRequest(f"{request_id}-echo", prompt, self.plan.scoring_params())
        if self.plan.params is not None:
            generation = EngineRequest(request_id, prompt, self.plan.params)
        return scoring, generation

    async def _prompt_outputs(self, index: int, generate: Generate) -> AsyncIterator[tuple[str, RequestOutput | None]]:
        scoring, generation = self.engine_requests(index)
        # aclosing: a consumer that stops early aborts the engine request now, not when collected.
        if scoring is not None:
            async with aclosing(generate(*scoring)) as outputs:
                async for output in outputs:
                    yield SCORED, output
        yield SCORED, None
        if generation is not None:
            async with aclosing(generate(*generation)) as outputs:
                async for output in outputs:
                    yield GENERATED, output

    # ---- gathering --------------------------------------------------------------------------------

    def add(self, index: int, kind: str, output: RequestOutput | None) -> list[dict[str, Any]]:
        """Take one output in; returns the choices a streamed chunk sends for it."""
        if output is not None and output.error is not None:
            raise APIError(500, output.error)
        if kind == SCORED:
            if output is not None:
                for delta in output.choices:
                    self.scored[index].extend(delta.logprobs)
                return []
            return self._echo(index)
        self.adapter.accumulate(self.states[index], output)
        self.num_cached_tokens = max(self.num_cached_tokens, output.num_cached_tokens)
        choices = []
        for delta in output.choices:
            if not (delta.text or delta.finish_reason or delta.logprobs):
                continue
            logprobs = None
            if self.plan.logprobs is not None:
                record = self._choice_logprobs(index, delta.index)
                since = len(record)
                record.extend(delta.logprobs)
                logprobs = record.body(since)
            choices.append({"index": self._index(index, delta.index), "text": delta.text, "logprobs": logprobs,
                            "finish_reason": delta.finish_reason})
        return choices

    def _index(self, prompt_index: int, choice: int) -> int:
        return prompt_index * self.plan.n + choice

    def _choice_logprobs(self, index: int, choice: int) -> LegacyLogprobs:
        return self.logprobs[index][choice]

    def _echo(self, index: int) -> list[dict[str, Any]]:
        """Once a prompt is scored: each choice's logprobs start with the prompt's (echo), and the choices
        a stream opens with (the echoed prompt; the whole answer when nothing is generated)."""
        prompt = self.plan.prompts[index]
        self.logprobs[index] = [self._prompt_logprobs(index) for _ in range(self.plan.best_of)]
        if not self.plan.echo and self.plan.params is not None:
            return []
        finish = "length" if self.plan.params is None else None
        text = prompt.text if self.plan.echo else ""
        return [{"index": self._index(index, choice), "text": text,
                 "logprobs": self.logprobs[index][choice].body() if self.plan.logprobs is not None else None,
                 "finish_reason": finish} for choice in range(self.plan.n)]

    def _prompt_logprobs(self, index: int) -> LegacyLogprobs:
        record = LegacyLogprobs(self.adapter.token_text)
        if not self.plan.echo:
            return record
        prompt, scored = self.plan.prompts[index], self.scored[index]
        if self.plan.logprobs is not None:
            record.add_unscored(prompt.token_ids[0])
            record.tokens += scored.tokens
            record.token_logprobs += scored.token_logprobs
            record.top_logprobs += scored.top_logprobs
        # Offsets into the choice's text, which starts with the prompt as echoed.
        record.text_offset = _offsets(record.tokens)
        record.offset = len(prompt.text)
        return record

    # ---- the answer -------------------------------------------------------------------------------

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p.token_ids) for p in self.plan.prompts)

    @property
    def num_completion_tokens(self) -> int:
        return sum(s.num_tokens for states in self.states for s in states)

    def usage(self) -> dict[str, Any]:
        return self.adapter.usage(self.num_prompt_tokens, self.num_completion_tokens, self.num_cached_tokens)

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self._envelope(choices)
        if self.plan.include_usage:
            body["usage"] = usage
        return body

    def body(self) -> dict[str, Any]:
        choices = []
        for index, prompt in enumerate(self.plan.prompts):
            states = list(enumerate(self.states[index]))
            if self.plan.best_of > self.plan.n:
                states.sort(key=lambda item: -sum(r.logprob for r in item[1].logprobs))
            for rank, (choice, state) in enumerate(states[:self.plan.n]):
                logprobs = None
                if self.plan.logprobs is not None:
                    logprobs = self._choice_logprobs(index, choice).body()
                text = (prompt.text if self.plan.echo else "") + state.text
                choices.append({"index": self._index(index, rank), "text": text, "logprobs": logprobs,
                                "finish_reason": state.finish_reason or "length"})
        return {**self._envelope(choices), "usage": self.usage()}

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.plan.request_id, "object": "text_completion", "created": self.plan.created,
                "model": self.adapter.model_id, "choices": choices,
                "system_fingerprint": self.adapter.system_fingerprint}


def _offsets(tokens: list[str]) -> list[int]:
    offsets, at = [], 0
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return offsets

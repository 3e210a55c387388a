"""A request's bookkeeping in the engine: what it asked for, its sequences (one per choice once forked), and
the checks a request passes before it is admitted (LLMEngine.add_request)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hearth.engine.sampling.sampling_params import SamplingParams
from hearth.engine.scheduling.sequence import Sequence


class ContextLengthError(ValueError):
    """The prompt plus the tokens asked for do not fit the model's context."""


@dataclass
class RequestState:
    request_id: str
    params: SamplingParams
    seed: int
    num_prompt_tokens: int
    seqs: list[Sequence] = field(default_factory=list)
    # time.monotonic() when a chunk of it was first scheduled (the end of its queue time).
    first_scheduled_time: float | None = None

    @property
    def is_finished(self) -> bool:
        return len(self.seqs) == self.params.n and all(s.is_finished for s in self.seqs)

    @property
    def num_output_tokens(self) -> int:
        return sum(s.num_output_tokens for s in self.seqs)


def check_request(params: SamplingParams, num_prompt: int, *, vocab_size: int, max_model_len: int,
                  max_num_seqs: int, logprobs_mode: str) -> None:
    """ValueError (ContextLengthError for the context) when a request of `num_prompt` prompt tokens and
    `params` cannot be served."""
    if not num_prompt:
        raise ValueError("the prompt is empty")
    params.validate_for_vocab(vocab_size)
    if params.n > max_num_seqs:  # its choices could never all run: it would wait forever
        raise ValueError(f"n must be at most {max_num_seqs} (the server's --max-num-seqs), got {params.n}")
    if params.is_scoring and num_prompt < 2:
        raise ValueError("a scored prompt needs at least 2 tokens (the first has no logprob)")
    if params.is_scoring and logprobs_mode == "processed":
        # Processed logprobs are of the masked distribution, where a forced token always has 0.
        raise ValueError("prompt logprobs are of the raw distribution; this server reports processed "
                         "logprobs (--logprobs-mode processed)")
    # A scored prompt generates nothing: it fits when its own tokens do.
    wanted = 0 if params.is_scoring else params.max_tokens or 1
    if num_prompt + wanted > max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{num_prompt + wanted} tokens ({num_prompt} in the messages, {wanted} in the completion). "
            "Please reduce the length of the messages or completion."
        )

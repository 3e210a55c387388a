"""Tokens the engine forces on a step's rows through the grammar bitmask: a scored prompt's next token, and
the closing of a json_object answer about to run out of tokens."""

from __future__ import annotations

import torch

from hearth.engine.scheduling.sequence import Sequence

# Tokens before the end of its budget from which a json_object answer is checked for needing to close.
JSON_ENDING_LOOKAHEAD = 64


def force_scored_tokens(rows: list[Sequence], bitmask: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """A scored prompt's next token is the only one allowed: greedy picks it, and its raw logprob (the mask
    changes no allowed logit) is the model's for that token."""
    from hearth.engine.output.structured_output import allow_only

    if bitmask is None:
        bitmask = torch.full((len(rows), -(-vocab_size // 32)), -1, dtype=torch.int32)
    for row, seq in enumerate(rows):
        if seq.forced_token_ids:
            allow_only(bitmask, row, seq.forced_token_ids[seq.num_output_tokens])
    return bitmask


def force_json_endings(rows: list[Sequence], bitmask: torch.Tensor, tokenizer, max_model_len: int) -> None:
    """A json_object answer about to run out of max_tokens is closed instead of cut off: once the tokens left
    only just cover the shortest completion of its JSON (and the end token), those tokens are forced one by
    one."""
    from hearth.engine.output.json_completion import json_completion
    from hearth.engine.output.structured_output import JSON_OBJECT, allow_only, is_allowed

    for row, seq in enumerate(rows):
        constraint = seq.params.constraint
        if seq.matcher is None or constraint.spec.kind != JSON_OBJECT or seq.matcher.is_terminated():
            continue
        left = min(seq.max_tokens, max_model_len - seq.num_prompt_tokens) - seq.num_output_tokens
        if left > JSON_ENDING_LOOKAHEAD:
            continue
        suffix = json_completion(seq.detokenizer.text)
        if not suffix:
            continue
        ids = tokenizer.encode(suffix, add_special_tokens=False)
        if len(ids) + 1 < left:
            continue
        for candidate in (ids[0], *tokenizer.encode(suffix[0], add_special_tokens=False)[:1]):
            if is_allowed(bitmask, row, candidate):
                allow_only(bitmask, row, candidate)
                seq.is_ending_forced = True
                break

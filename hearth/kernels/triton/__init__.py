"""Triton twins of the sampler's whole-vocabulary passes, used by hearth.kernels.logits.sampler when logits are on CUDA.

- processing.py: stages 2-4 (logit_bias, bans, bitmask, repetition, frequency/presence) in two launches
- softmax.py: block maxima, row max and sum of exp of the tempered row; the tempered softmax and block sums
- truncation.py: candidate weights and the kept prefix of top_k / top_p / min_p over the top candidates
- draw.py: the seeded draw, the same splitmix64 stream as hearth.kernels.logits.sampling, over probs or candidates
- pipeline.py: the sampler's pipeline on these kernels (the small [num_seqs, K] steps stay in torch)

Each module imports triton at import time; `is_available()` says whether that can work. With
TRITON_INTERPRET=1 set before triton is imported, the kernels run on CPU tensors (the parity tests do so).
"""

from __future__ import annotations

import importlib.util
import os


def is_available() -> bool:
    """triton is importable and HEARTH_TRITON is not "0"."""
    return os.environ.get("HEARTH_TRITON", "1") != "0" and importlib.util.find_spec("triton") is not None

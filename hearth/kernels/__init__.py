"""hearth's kernels, in three rooms:

- hearth.kernels.logits: the sampling core, pure tensor ops over logits [num_seqs, vocab_size] and per-batch metadata;
- hearth.kernels.triton: GPU versions of some of those steps;
- hearth.kernels.model: the forward pass's CPU kernels (packed linear layers, row attention, the layer stack in C).

Imports torch (and triton where present) and nothing else of hearth's.
"""

from hearth.kernels.logits.metadata import SamplerOutput, SamplingMetadata
from hearth.kernels.logits.sampler import Sampler

__all__ = ["Sampler", "SamplerOutput", "SamplingMetadata"]

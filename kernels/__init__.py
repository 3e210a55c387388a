"""hearth's sampling core: pure tensor ops over logits [num_seqs, vocab_size] and per-batch metadata.

Imports torch (and triton where present) and nothing else of hearth's.
"""

from kernels.metadata import SamplerOutput, SamplingMetadata
from kernels.sampler import Sampler

__all__ = ["Sampler", "SamplerOutput", "SamplingMetadata"]

"""transformers' own module for architectures the native forward does not cover.

Each sequence keeps its own DynamicCache and runs on its own (no batching across sequences); the
scheduler and sampler are the same as for native models.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor


class HFModule:
    def __init__(self, model) -> None:
        import inspect

        self.model = model
        self.caches: dict[int, object] = {}
        # transformers renamed `past_key_values` to `cache` (the old name is deprecated).
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype, device: torch.device, config=None) -> HFModule:
        """The model of an HF folder, or of a .gguf file (`folder`) with its `config` (transformers dequantizes
        the file's weights)."""
        from transformers import AutoModelForCausalLM

        if Path(folder).suffix == ".gguf":
            model = AutoModelForCausalLM.from_pretrained(Path(folder).parent, gguf_file=Path(folder).name,
                                                         config=config, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        model = model.to(device).eval()
        return cls(model)

    @torch.inference_mode()
    def run_chunk(self, seq_id: int, token_ids: list[int], start: int) -> Tensor:
        """Extend the sequence's cache by token_ids at positions start...; returns logits [vocab] of the last."""
        from transformers import DynamicCache

        if start == 0:
            self.caches[seq_id] = DynamicCache()
        device = self.model.device
        ids = torch.tensor([token_ids], device=device)
        positions = torch.arange(start, start + len(token_ids), device=device).unsqueeze(0)
        out = self.model(input_ids=ids, position_ids=positions, use_cache=True, **{self._cache_arg: self.caches[seq_id]})
        return out.logits[0, -1]

    def fork(self, parent_id: int, child_id: int) -> None:
        self.caches[child_id] = copy.deepcopy(self.caches[parent_id])

    def drop(self, seq_id: int) -> None:
        self.caches.pop(seq_id, None)

"""What the app and the batch runner share: the adapter built for an engine."""

from __future__ import annotations

import pytest

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from server.chat.completion import VERSION, chat_adapter


@pytest.mark.parametrize(("quantization", "suffix"), [("none", ""), ("int8", "-int8")])
def test_system_fingerprint_names_dtype_weights_and_device(tiny_entry, quantization, suffix):
    """int8/int4 weights give other tokens than the dense ones: a client comparing runs must see which ran."""
    engine = LLMEngine(EngineConfig(model_path=str(tiny_entry.path), dtype="float32", quantization=quantization,
                                    max_num_seqs=2, kv_cache_memory_gib=0.05), tiny_entry)
    assert chat_adapter(engine, tiny_entry).system_fingerprint == f"hearth-{VERSION}-float32{suffix}-cpu"

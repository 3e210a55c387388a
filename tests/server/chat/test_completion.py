"""What the app and the batch runner share: the adapter built for an engine."""

from __future__ import annotations

import pytest

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.server.chat.completion import VERSION, chat_adapter


@pytest.mark.parametrize(("dtype", "quantization", "suffix"), [("float32", "none", "float32"),
                                                            ("float32", "int8", "float32-int8"),
                                                            ("bfloat16", "bf16", "bfloat16-bf16")])
def test_system_fingerprint_names_dtype_weights_and_device(tiny_entry, dtype, quantization, suffix):
    """int8/int4 weights, and bf16 ones on hearth's kernels, give other tokens than the dense ones on torch's:
    a client comparing runs must see which ran."""
    from hearth.kernels.model import vnni_linear

    if quantization == "bf16" and vnni_linear.unavailable_reason() is not None:
        pytest.skip(f"hearth.kernels.model.vnni_linear: {vnni_linear.unavailable_reason()}")
    engine = LLMEngine(EngineConfig(model_path=str(tiny_entry.path), dtype=dtype, quantization=quantization,
                                    max_num_seqs=2, kv_cache_memory_gib=0.05), tiny_entry)
    assert chat_adapter(engine, tiny_entry).system_fingerprint == f"hearth-{VERSION}-{suffix}-cpu"

"""A .gguf entry served from the file itself: its own types choose the format, its metadata gives the config,
tokenizer and chat template, and nothing is written to disk."""

from __future__ import annotations

import shutil

import pytest
import torch

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.loader import source_gguf
from hearth.engine.loading.registry import ModelEntry, cache_dir
from hearth.engine.sampling.sampling_params import SamplingParams
from tests.conftest import chat_prompt


def _answer(engine: LLMEngine, text: str, max_tokens: int = 12) -> tuple[list[int], list[float]]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=True, top_logprobs=2)
    engine.add_request("a", chat_prompt(engine, text), params)
    logprobs: list[float] = []
    tokens: list[int] = []
    while engine.has_unfinished_requests():
        for output in engine.step():
            for delta in output.choices:
                tokens.extend(delta.token_ids)
                logprobs.extend(entry.logprob for entry in delta.logprobs)
    return tokens, logprobs


def test_the_default_models_gguf_serves_from_the_file_as_its_converted_folder_does(default_entry, tmp_path,
                                                                                    monkeypatch):
    gguf = source_gguf(default_entry, default_entry.path)
    assert gguf is not None, "make setup keeps the default model's GGUF"
    alone = tmp_path / "models" / gguf.name
    alone.parent.mkdir()
    alone.symlink_to(gguf)
    # A cache with the compiled kernels and row tiling already there (what make setup leaves), and no more.
    cache = tmp_path / "cache"
    for name in ("kernels", "row_tiling.json"):
        source = cache_dir() / name
        if source.is_dir():
            shutil.copytree(source, cache / name)
        elif source.is_file():
            cache.mkdir(exist_ok=True)
            shutil.copy2(source, cache / name)
    before = {p for p in cache.rglob("*") if p.is_file()}
    monkeypatch.setenv("HEARTH_CACHE", str(cache))
    entry = ModelEntry(id="from-the-file", path=alone)
    assert entry.serving_format() == "int4", "a Q4_1 file needs no quantization field"
    from_file = LLMEngine(EngineConfig(model_path=str(alone), quantization=entry.serving_format(), max_num_seqs=2),
                          entry)
    assert from_file.tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in from_file.tokenizer.chat_template
    prompt = "What is the capital of France?"
    answer = _answer(from_file, prompt)
    del from_file

    written = {p for p in cache.rglob("*") if p.is_file()} - before
    assert written == set(), f"serving the file wrote {written}"

    converted = LLMEngine(EngineConfig(model_path=str(default_entry.path), quantization="int4", max_num_seqs=2),
                          default_entry)
    assert answer == _answer(converted, prompt), "the same weights give the same tokens and logprobs"


def test_the_tiny_k_quant_file_in_float32_answers_as_transformers_on_the_same_file(kquant_gguf):
    """The in-place reader, end to end: the native float32 forward over the file's dequantized tensors against
    transformers' own GGUF loading of the same file, greedy."""
    from transformers import AutoModelForCausalLM

    path = kquant_gguf["Q4_K_M"]
    entry = ModelEntry(id="tiny-q4-k-m", path=path, quantization="none", max_model_len=256)
    engine = LLMEngine(EngineConfig(model_path=str(path), dtype="float32", quantization="none", max_num_seqs=2,
                                    kv_cache_memory_gib=0.05), entry)
    prompt = chat_prompt(engine, "The quick brown fox")
    tokens, _ = _answer(engine, "The quick brown fox", max_tokens=8)
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):]
    assert tokens == expected.tolist()[:len(tokens)] and len(tokens) >= 1


def test_a_file_in_a_type_no_format_serves_is_refused_at_start_naming_a_tensor(tmp_path):
    from tests.engine.loading.test_gguf_file import _write_typed

    path = tmp_path / "coarse.gguf"
    _write_typed(path, "Q3_K")
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q\.weight is Q3_K"):
        ModelEntry(id="coarse", path=path).serving_format()


def test_a_gguf_on_transformers_module_gives_the_native_forwards_greedy_tokens(kquant_gguf):
    """With the native forward off, transformers' own module serves the file (it dequantizes it, built from the
    architecture's own config class rather than the light config the native path reads): float32 weights on
    both sides, so the greedy tokens agree."""
    path = kquant_gguf["F32"]
    entry = ModelEntry(id="tiny-f32", path=path)
    common = dict(model_path=str(path), dtype="float32", max_num_seqs=2, kv_cache_memory_gib=0.05, max_model_len=256)
    native = LLMEngine(EngineConfig(quantization="none", **common), entry)
    module = LLMEngine(EngineConfig(quantization="none", use_native_model=False, **common), entry)
    assert native.loaded.is_native and not module.loaded.is_native
    assert type(module.loaded.model.model.config).__name__ == "LlamaConfig"
    prompt = "Count: one two three"
    native_tokens, native_logprobs = _answer(native, prompt, max_tokens=8)
    module_tokens, module_logprobs = _answer(module, prompt, max_tokens=8)
    assert native_tokens == module_tokens
    torch.testing.assert_close(torch.tensor(native_logprobs), torch.tensor(module_logprobs), rtol=0, atol=1e-3)

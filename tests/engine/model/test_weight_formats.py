"""Every weight format's stated guarantees hold at each CPU level this machine runs, and a name or a format that
cannot run here is refused with the field and the reason (hearth.engine.model.formats)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelEntry
from hearth.engine.model.formats import FORMAT_NAMES, FORMATS, PrefixHits, parse_format
from hearth.engine.model.linear_factory import LinearFactory
from hearth.kernels import cpu_isa

CPU = torch.device("cpu")
# Shapes that pack in every format (tiles of 16 outputs x 32 inputs, whole int4 groups), and a vocabulary head.
SHAPES = [(96, 128), (128, 64)]
VOCAB_SHAPE = (512, 64)


def test_the_registry_names_each_format_by_its_own_name():
    assert FORMAT_NAMES == ("none", "bf16", "int8", "int4", "mixed")
    for name in FORMAT_NAMES:
        assert parse_format(name).name == name
        assert parse_format(name) == parse_format(name)
    assert parse_format("int4") != parse_format("int8")


def test_an_unknown_name_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"quantization must be one of {FORMAT_NAMES}, got 'q4'")):
        parse_format("q4")
    with pytest.raises(ValueError, match=re.escape(f"quantization must be one of {FORMAT_NAMES}, got 'Q4_1'")):
        EngineConfig(model_path="model", quantization="Q4_1")
    with pytest.raises(ValueError, match=re.escape("quantization of 'm' must be one of")):
        ModelEntry(id="m", path=tmp_path, quantization="int3")
    with pytest.raises(ValueError, match=re.escape("group_size must be one of (32, 64, 128, 256), got 48")):
        parse_format("int4", group_size=48)


def test_the_config_parses_its_name_once():
    config = EngineConfig(model_path="model", quantization="int8")
    assert config.weight_format is config.weight_format
    assert config.weight_format == parse_format("int8")


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_a_format_runs_exactly_at_the_levels_it_states_and_is_refused_elsewhere_with_its_reason(name, cpu_level):
    weight_format = parse_format(name)
    guarantees = weight_format.guarantees(CPU, torch.bfloat16, 9, 3, 64)
    reason = weight_format.unavailable_reason(CPU, torch.bfloat16)
    assert set(guarantees.levels) <= set(cpu_isa.runnable_levels())
    assert (cpu_level in guarantees.levels) == (reason is None), reason
    if reason is None:
        LinearFactory(weight_format, torch.bfloat16, CPU)
    else:
        with pytest.raises(ValueError, match=re.escape(f"quantization={name} cannot run here: {reason}")):
            LinearFactory(weight_format, torch.bfloat16, CPU)


@pytest.mark.parametrize("name", [n for n in FORMAT_NAMES if FORMATS[n].needs_native_forward])
def test_a_format_without_kernels_on_the_device_is_refused_with_the_reason(name):
    weight_format = parse_format(name)
    reason = weight_format.unavailable_reason(torch.device("meta"), torch.bfloat16)
    assert reason
    with pytest.raises(ValueError, match=re.escape(f"quantization={name} cannot run here: {reason}")):
        LinearFactory(weight_format, torch.bfloat16, torch.device("meta"))


def _runnable(name: str) -> LinearFactory:
    weight_format = parse_format(name)
    reason = weight_format.unavailable_reason(CPU, torch.bfloat16)
    if reason is not None:
        pytest.skip(f"quantization={name} is refused at CPU level {cpu_isa.level()!r}: {reason}")
    return LinearFactory(weight_format, torch.bfloat16, CPU)


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_rows_are_independent_of_the_row_count_where_the_format_says_so(name, cpu_level):
    """A plain kernel call (no row tiling): each row alone equals it within any batch, at any place in it."""
    factory = _runnable(name)
    guarantees = factory.weight_format.guarantees(CPU, torch.bfloat16, 9, 3, 64)
    generator = torch.Generator().manual_seed(7)
    linears = [factory.linear(torch.randn(*shape, generator=generator) * 0.05, None) for shape in SHAPES]
    _, head = factory.embedding_and_head(torch.randn(*VOCAB_SHAPE, generator=generator) * 0.05, None)
    for linear in linears:
        assert linear.is_row_count_invariant == guarantees.rows_independent_of_row_count, type(linear).__name__
    if not guarantees.rows_independent_of_row_count:
        return
    for linear in [*linears, head]:
        assert linear.is_row_count_invariant, type(linear).__name__
        rows = torch.randn(40, linear.in_features, generator=generator).to(torch.bfloat16)
        alone = torch.cat([linear.matmul(rows[i:i + 1]) for i in range(40)])
        for size in (2, 3, 8, 16, 17, 33, 40):
            assert torch.equal(linear.matmul(rows[:size]), alone[:size]), (type(linear).__name__, size)
        order = torch.randperm(40, generator=generator)
        assert torch.equal(linear.matmul(rows[order]), alone[order])


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_every_head_gives_float32_logits_and_packed_layers_hand_on_the_residual_dtype(name, cpu_level):
    factory = _runnable(name)
    residual = factory.weight_format.guarantees(CPU, torch.bfloat16, 9, 3, 64).residual_dtype
    generator = torch.Generator().manual_seed(8)
    for lm_head in (None, torch.randn(*VOCAB_SHAPE, generator=generator)):
        embedding, head = factory.embedding_and_head(torch.randn(*VOCAB_SHAPE, generator=generator), lm_head)
        assert head.rows_invariant(torch.randn(3, VOCAB_SHAPE[1]).to(torch.bfloat16)).dtype == torch.float32
        assert embedding.lookup(torch.tensor([0, 5])).shape == (2, VOCAB_SHAPE[1])
    down = factory.linear(torch.randn(*SHAPES[0], generator=generator), None, adds_to_residual=True)
    out = down.matmul(torch.randn(2, SHAPES[0][1]).to(torch.bfloat16))
    # Where a layer falls back to aten's kernels it hands on the activation dtype, and the model widens it.
    assert out.dtype in (residual, torch.bfloat16)
    assert out.dtype == residual or not factory.placement.has_c_kernels


@pytest.mark.parametrize("name", [n for n in FORMAT_NAMES if FORMATS[n].is_exact_against_transformers])
def test_a_format_exact_against_transformers_computes_layers_as_torch_linear_does(name, cpu_level):
    """transformers' nn.Linear is F.linear (the whole forward's exactness: tests/engine/model/models/test_llama.py)."""
    factory = _runnable(name)
    generator = torch.Generator().manual_seed(9)
    weight = torch.randn(*SHAPES[0], generator=generator).to(torch.bfloat16)
    x = torch.randn(5, SHAPES[0][1], generator=generator).to(torch.bfloat16)
    assert torch.equal(factory.linear(weight, None).matmul(x), F.linear(x, weight))


@pytest.fixture(scope="module")
def head_dim_64_entry(tmp_path_factory, default_entry) -> ModelEntry:
    """A random 1-layer Llama whose heads (2 query, 1 KV, head_dim 64) the row attention kernel takes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import save_tiny_llama

    folder = save_tiny_llama(tmp_path_factory.mktemp("tiny-64"), default_entry, tie_word_embeddings=True)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return ModelEntry(id="tiny-64", path=folder, max_model_len=512)


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_the_engine_takes_its_residual_dtype_and_prefix_regime_from_the_format(name, cpu_level, head_dim_64_entry):
    _runnable(name)
    config = EngineConfig(model_path=str(head_dim_64_entry.path), quantization=name, max_num_seqs=2,
                          kv_cache_memory_gib=0.01, max_model_len=256, prefill_chunk_size=32)
    engine = LLMEngine(config, head_dim_64_entry)
    model = engine.loaded.model
    guarantees = config.weight_format.guarantees(CPU, model.dtype, model.num_heads, model.num_kv_heads,
                                                 model.shape.head_dim)
    assert model.weight_format is config.weight_format
    assert model.residual_dtype == guarantees.residual_dtype
    assert model.has_row_count_invariant_layers == guarantees.rows_independent_of_row_count
    assert engine.scheduler.config.has_batch_invariant_kv == (guarantees.prefix_hits is PrefixHits.ANY_TOKEN)

"""hearth's GGUF index against the gguf package's reader, and the format a file's own types call for."""

from __future__ import annotations

import numpy as np
import pytest

from hearth.engine.loading.gguf_file import GGUFIndex, format_for, hf_name, open_gguf
from hearth.engine.loading.loader import source_gguf


@pytest.fixture(scope="module")
def default_gguf(default_entry):
    path = source_gguf(default_entry, default_entry.path)
    assert path is not None, "make setup keeps the default model's GGUF"
    return path


def test_the_index_reads_every_tensor_and_scalar_as_the_gguf_package_does(default_gguf):
    from gguf import GGUFReader

    reader, index = GGUFReader(str(default_gguf)), GGUFIndex(str(default_gguf))
    assert [t.name for t in index.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(index.tensors, reader.tensors, strict=True):
        assert ours.tensor_type == theirs.tensor_type and list(ours.shape) == list(theirs.shape)
        assert ours.data.dtype == theirs.data.dtype and ours.data.shape == theirs.data.shape
        assert np.array_equal(np.asarray(ours.data).view(np.uint8), np.asarray(theirs.data).view(np.uint8)), ours.name
    for key, field in reader.fields.items():
        if not key.startswith("GGUF.") and field.types[0].name != "ARRAY":
            part = field.parts[field.data[0]]
            expected = bytes(part).decode() if field.types[0].name == "STRING" else part.tolist()[0]
            assert index.metadata[key] == expected, key
    assert index.metadata["general.architecture"] == "llama"


def test_every_tensor_of_the_default_model_has_its_hf_name(default_gguf):
    names = {t.name: hf_name(t.name) for t in open_gguf(default_gguf).tensors}
    assert None not in names.values()
    assert names["token_embd.weight"] == "model.embed_tokens.weight"
    assert names["blk.7.ffn_norm.weight"] == "model.layers.7.post_attention_layernorm.weight"
    assert names["blk.0.attn_q.weight"] == "model.layers.0.self_attn.q_proj.weight"


def test_a_files_own_types_decide_its_format(default_gguf, kquant_gguf):
    assert format_for(default_gguf) == "int4"  # Q4_1 projections only
    # Q4_K_M's Q6_K tensors would be rounded to 4 bits in int4: 4-bit and finer projections together serve
    # mixed (each at its own grid), finer ones alone int8.
    expected = {"F32": "none", "Q4_K_M": "mixed", "Q5_K_M": "int8", "Q6_K": "int8", "Q8_0": "int8"}
    assert {kind: format_for(path) for kind, path in kquant_gguf.items() if kind in expected} == expected


def _write_typed(path, kind: str) -> None:
    """A one-layer GGUF whose attn_q is stored in `kind` (random bytes of that type's block layout)."""
    import gguf

    block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    writer = gguf.GGUFWriter(str(path), "llama")
    raw = np.random.default_rng(0).integers(0, 255, (256, 256 // block * block_bytes), dtype=np.uint8)
    writer.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.add_tensor("blk.0.attn_k.weight", np.zeros((256, 256), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("kind", ["Q2_K", "Q3_K", "IQ4_XS"])
def test_types_no_format_holds_as_finely_are_refused_naming_the_tensor_and_type(tmp_path, kind):
    path = tmp_path / f"model-{kind}.gguf"
    _write_typed(path, kind)
    with pytest.raises(ValueError, match=rf"tensor blk\.0\.attn_q\.weight is {kind}.*quantization int4 or int8"):
        format_for(path)

"""benchmarks/shape_twin.py: a random-weight twin has the config's exact tensor names and shapes and loads in
hearth's native loader through the models.yaml it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hearth.engine.config import EngineConfig
from hearth.engine.loading.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import shape_twin  # noqa: E402


@pytest.mark.parametrize("config_name", ["llama-3.1-8b.json", "default"])
def test_weight_shapes_are_transformers_own(config_name, default_entry):
    from transformers import AutoConfig, LlamaForCausalLM

    path = default_entry.path if config_name == "default" else REPO / "benchmarks" / "configs" / config_name
    with torch.device("meta"):
        model = LlamaForCausalLM(AutoConfig.from_pretrained(path))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight")
    assert shape_twin.weight_shapes(shape_twin.read_config(path)) == expected


def test_llama_8b_config_is_the_published_shape():
    config = shape_twin.read_config(REPO / "benchmarks" / "configs" / "llama-3.1-8b.json")
    num_params = sum(int(torch.tensor(s).prod()) for s in shape_twin.weight_shapes(config).values())
    assert num_params == 8_030_261_248  # Llama-3.1-8B's parameter count
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_theta"] == 500000.0


def test_a_two_layer_twin_of_the_default_model_loads_natively(tmp_path, default_entry):
    from hearth.engine.loading.loader import load_model

    out = shape_twin.build(default_entry.path, tmp_path / "twin", tokenizer_from=default_entry.path, layers=2,
                           max_model_len=256)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["dtype"] == "bfloat16"
    entry = ModelRegistry.load(out / "models.yaml").resolve(None)
    loaded = load_model(entry, EngineConfig(model_path=str(entry.path), device="cpu", quantization="none"))
    assert loaded.is_native and len(loaded.model.layers) == 2
    assert loaded.vocab_size == 49152 and loaded.max_model_len == 256
    assert loaded.eos_token_ids == (2,)

"""The committed K-quant files are servable as they are: transformers reads their tokenizer, chat template,
config and weights from the GGUF alone (gguf_file=), as it reads a downloaded GGUF repo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engine.loading import kquant_files
from tests.engine.loading.kquant_files import (
    BOS_ID,
    DATA,
    EOS_ID,
    HEADS,
    HIDDEN,
    INTERMEDIATE,
    KV_HEADS,
    LAYERS,
    PAD_ID,
    SPECIAL_TOKENS,
    TYPES,
    VOCAB,
    file_name,
)


@pytest.fixture(scope="module", params=TYPES)
def tokenizer(request):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DATA, gguf_file=file_name(request.param))


def test_the_tokenizer_has_the_vocabulary_and_special_tokens_the_file_states(tokenizer):
    assert len(tokenizer) == VOCAB
    assert [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == [0, 1, 2]
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|endoftext|>", BOS_ID)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", EOS_ID)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", PAD_ID)


def test_text_round_trips_through_the_tokenizer(tokenizer):
    """The text it was trained on (merges shorten it), and bytes it never saw (byte fallback of a byte-level BPE)."""
    text = kquant_files.training_text()
    ids = tokenizer.encode(text, add_special_tokens=True)
    assert tokenizer.decode(ids) == text and len(ids) < len(text) / 2
    unseen = "Grüße, 世界 🙂\ttabs  and\r\nnewlines "
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen


def test_the_chat_template_is_chatml_and_its_markers_are_single_special_tokens(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(1) == 3 and ids.count(2) == 2 and ids[0] == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "system\nBe brief.\nuser\nHello?\nassistant\n"


def test_the_committed_vocabulary_is_what_training_gives_on_the_same_python():
    committed = kquant_files.vocab_of(kquant_files.committed_files()["Q8_0"])
    trained = kquant_files.train_vocab()
    if trained.text != committed.text:
        pytest.skip(f"trained on {committed.text}; this is {trained.text}, whose pydoc_data.topics may differ")
    assert trained == committed


def test_the_config_is_the_tiny_llama():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(DATA, gguf_file=file_name("Q4_K_M"))
    assert config.model_type == "llama"
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (VOCAB, HIDDEN, INTERMEDIATE)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (LAYERS, HEADS, KV_HEADS)
    assert (config.bos_token_id, config.eos_token_id) == (BOS_ID, EOS_ID) and not config.tie_word_embeddings


def test_the_model_loads_with_the_ggufs_own_weights_and_generates():
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoModelForCausalLM

    path = kquant_files.committed_files()["Q4_K_M"]
    model = AutoModelForCausalLM.from_pretrained(DATA, gguf_file=path.name, dtype=torch.float32)
    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
    for gguf_name, hf_name in (("token_embd.weight", "model.embed_tokens.weight"), ("output.weight", "lm_head.weight"),
                               ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight")):
        tensor = tensors[gguf_name]
        expected = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32)
        assert torch.equal(model.state_dict()[hf_name], torch.from_numpy(expected)), gguf_name
    prompt = torch.tensor([[1, 300, 301, 2]])
    out = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=PAD_ID)
    assert out.shape == (1, 8) and torch.equal(out[:, :4], prompt)

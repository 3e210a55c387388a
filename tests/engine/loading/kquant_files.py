"""GGUF files of a tiny random Llama as people download them: the gguf package writes the float32 file,
llama.cpp's own llama-quantize makes the Q4_K_M, Q5_K_M, Q6_K and Q8_0 files from it.

The quantized files are committed in tests/engine/loading/data/ (committed_files()), so the tests need no
llama-quantize; they were made, and are remade, by

    .venv/bin/python -m tests.engine.loading.kquant_files --write tests/engine/loading/data

(test_kquant_files.py checks, where llama-quantize is built, that remaking them gives the same tensors).
The float32 file is not committed: write_float32_llama rewrites it from the seed in a moment.

Every projection and the vocabulary tables have 256 or 512 inputs (multiples of QK_K = 256), so no
tensor falls back to another type. What each file then holds (checked by test_kquant_files.py):
- Q4_K_M: Q4_K everywhere, but attn_v and ffn_down of the layers llama.cpp's use_more_bits picks
  (more_bits_layers(): layer 1 of 2) and the head (output) in Q6_K;
- Q5_K_M: the same with Q5_K for Q4_K;
- Q6_K: every matrix Q6_K; Q8_0: every matrix Q8_0.
Norms stay F32.

The files carry a real tokenizer, so transformers (AutoTokenizer, AutoConfig, AutoModelForCausalLM with
gguf_file=) and llama.cpp load them: a byte-level BPE ("gpt2" in GGUF terms, GPT-2's split) of VOCAB
entries trained by the `tokenizers` library on Python's pydoc_data.topics, whose first three entries are
SPECIAL_TOKENS, with a ChatML CHAT_TEMPLATE and <|im_end|> as end of sequence.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parent / "data"
TYPES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
HIDDEN, INTERMEDIATE, LAYERS, VOCAB, HEADS, KV_HEADS = 256, 512, 2, 512, 4, 2
SEED = 0
NAME = "hearth-tiny-random-llama"

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_ID = PAD_ID = SPECIAL_TOKENS.index("<|endoftext|>")
EOS_ID = SPECIAL_TOKENS.index("<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# GGUF's token types (llama.cpp's llama_token_type): 1 normal, 3 control.
NORMAL, CONTROL = 1, 3
# Where the tokenizer's text came from, written into the files: pydoc_data.topics differs between Python
# releases, so a vocabulary trained on another release may differ (the tensors do not).
TEXT_KEY = "hearth.fixture.tokenizer_text"


def file_name(kind: str) -> str:
    return f"tiny-{kind}.gguf"


def committed_files(folder: Path = DATA) -> dict[str, Path]:
    """Each TYPES name -> its committed file (in tests/engine/loading/data/)."""
    return {kind: folder / file_name(kind) for kind in TYPES}


def more_bits_layers(num_layers: int = LAYERS) -> list[int]:
    """The layers whose attn_v and ffn_down Q4_K_M and Q5_K_M put in Q6_K: llama.cpp's use_more_bits
    (src/llama-quant.cpp), the first and last eighth of the layers and every third one in between."""
    eighth = num_layers // 8
    return [i for i in range(num_layers) if i < eighth or i >= 7 * num_layers // 8 or (i - eighth) % 3 == 2]


@dataclass(frozen=True)
class Vocab:
    """A byte-level BPE as GGUF stores it: tokens in the byte alphabet, their types, merges "a b"."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    text: str  # where it was trained (TEXT_KEY)


def training_text() -> str:
    import pydoc_data.topics

    return "\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))


def train_vocab() -> Vocab:
    """VOCAB entries, SPECIAL_TOKENS first, then the 256 bytes, then merges learned on training_text()
    (deterministic: the trainer breaks ties between equal counts by the pair itself)."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([training_text()], trainer)
    model = json.loads(tokenizer.to_str())["model"]
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    assert [index for _, index in by_id] == list(range(VOCAB)), f"trained {len(by_id)} entries, not {VOCAB}"
    tokens = tuple(token for token, _ in by_id)
    assert tokens[:len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    merges = tuple(" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"])
    types = tuple(CONTROL if token in SPECIAL_TOKENS else NORMAL for token in tokens)
    return Vocab(tokens, types, merges, f"pydoc_data.topics of Python {platform.python_version()}")


def vocab_of(path: Path) -> Vocab:
    """The Vocab a GGUF file holds (to write the float32 file with the committed files' tokenizer)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    return Vocab(tuple(fields["tokenizer.ggml.tokens"].contents()), tuple(fields["tokenizer.ggml.token_type"].contents()),
                 tuple(fields["tokenizer.ggml.merges"].contents()), fields[TEXT_KEY].contents())


def write_float32_llama(path: Path, seed: int = SEED, vocab: Vocab | None = None,
                        projection_type: str | None = None) -> Path:
    """A random Llama (LAYERS layers, 4 heads, 2 KV heads) in GGUF float32, head untied from the embedding,
    with `vocab` (train_vocab() by default) and CHAT_TEMPLATE. The q/k rows stand for ones already
    permuted by llama.cpp's converter (they are random). The tensors depend on the seed only.
    `projection_type` (a type the gguf package quantizes, as Q5_0): the layers' projections in it."""
    import gguf

    vocab = vocab if vocab is not None else train_vocab()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(NAME)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(VOCAB)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.token_types))
    writer.add_token_merges(list(vocab.merges))
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_string(TEXT_KEY, vocab.text)
    rng = np.random.default_rng(seed)

    def matrix(name: str, rows: int, cols: int, kind: str | None = None) -> None:
        values = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        if kind is None:
            writer.add_tensor(name, values)
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    kv_rows = KV_HEADS * (HIDDEN // HEADS)
    matrix("token_embd.weight", VOCAB, HIDDEN)
    matrix("output.weight", VOCAB, HIDDEN)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for layer in range(LAYERS):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(HIDDEN, np.float32))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(HIDDEN, np.float32))
        for name, rows, cols in (("attn_q", HIDDEN, HIDDEN), ("attn_k", kv_rows, HIDDEN), ("attn_v", kv_rows, HIDDEN),
                                 ("attn_output", HIDDEN, HIDDEN), ("ffn_gate", INTERMEDIATE, HIDDEN),
                                 ("ffn_up", INTERMEDIATE, HIDDEN), ("ffn_down", HIDDEN, INTERMEDIATE)):
            matrix(prefix + name + ".weight", rows, cols, projection_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama_quantize() -> Path:
    """Where benchmarks/peers/llama_server.sh builds llama-quantize: the AVX-512 build at hearth's avx512
    and amx levels, the AVX2 one below (the same choice as the script's, so the binary runs on this CPU)."""
    from hearth.kernels import cpu_isa

    cache = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth"))
    version = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
    source = cache / "peers" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    build = "build" if cpu_isa.level() in ("avx512", "amx") else "build-avx2"
    return source / build / "bin" / "llama-quantize"


def missing_reason() -> str | None:
    """None when llama-quantize is built, else why the files cannot be remade."""
    tool = llama_quantize()
    if not os.access(tool, os.X_OK):
        return f"llama-quantize is not built at {tool} (benchmarks/peers/llama_server.sh build makes it)"
    return None


def quantize(source: Path, target: Path, kind: str) -> Path:
    """llama-quantize source -> target in `kind` (a float32 source needs no --allow-requantize), 1 thread."""
    result = subprocess.run([str(llama_quantize()), str(source), str(target), kind, "1"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise RuntimeError(f"llama-quantize {kind} failed with status {result.returncode}")
    return target


def make_files(folder: Path, float32_folder: Path | None = None, vocab: Vocab | None = None) -> dict[str, Path]:
    """Every TYPES file of the random Llama in `folder` by llama-quantize, and the float32 file they are
    made from (in float32_folder, `folder` by default), by type name ("F32" and TYPES)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = write_float32_llama((float32_folder or folder) / file_name("F32"), vocab=vocab)
    files = {"F32": source}
    for kind in TYPES:
        files[kind] = quantize(source, folder / file_name(kind), kind)
    return files


def tensor_types(path: Path) -> dict[str, str]:
    """GGUF tensor name -> its type's name, as the file holds it."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}


def tensors_of(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """GGUF tensor name -> (type name, shape, its bytes), to compare two files' tensors."""
    from gguf import GGUFReader

    return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape), t.data.tobytes())
            for t in GGUFReader(str(path)).tensors}


def metadata_of(path: Path) -> dict[str, object]:
    """GGUF key -> its value, every key of the file."""
    from gguf import GGUFReader

    return {name: field.contents() for name, field in GGUFReader(str(path)).fields.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, required=True, help="folder for the TYPES files (tests/engine/loading/data)")
    args = parser.parse_args(argv)
    reason = missing_reason()
    if reason is not None:
        parser.error(reason)
    with tempfile.TemporaryDirectory() as scratch:
        files = make_files(args.write, float32_folder=Path(scratch))
        for kind in TYPES:
            print(f"{files[kind]}  {files[kind].stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

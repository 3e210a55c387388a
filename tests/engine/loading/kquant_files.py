"""GGUF files of a tiny random Llama as people download them: the gguf package writes the float32 file,
llama.cpp's own llama-quantize makes the Q4_K_M, Q5_K_M, Q6_K and Q8_0 files from it.

Every projection and the vocabulary tables have 256 or 512 inputs (multiples of QK_K = 256), so no
tensor falls back to another type. What each file then holds (checked by tests/engine/loading/test_kquant_files.py):
- Q4_K_M: Q4_K everywhere, but attn_v and ffn_down of layers 2 and 3 and the head (output) in Q6_K;
- Q5_K_M: the same with Q5_K for Q4_K;
- Q6_K: every matrix Q6_K; Q8_0: every matrix Q8_0.
Norms stay F32. llama-quantize needs no tokenizer for this, and the file has none (it is not servable yet).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
TYPES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
HIDDEN, INTERMEDIATE, LAYERS, VOCAB, HEADS, KV_HEADS = 256, 512, 4, 512, 4, 2


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
    """None when llama-quantize is built, else why the fixtures cannot be made."""
    tool = llama_quantize()
    if not os.access(tool, os.X_OK):
        return f"llama-quantize is not built at {tool} (benchmarks/peers/llama_server.sh build makes it)"
    return None


def write_float32_llama(path: Path, seed: int = 0) -> Path:
    """A random Llama (4 layers, 4 heads, 2 KV heads) in GGUF float32, head untied from the embedding.
    The q/k rows stand for ones already permuted by llama.cpp's converter (they are random)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
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
    rng = np.random.default_rng(seed)

    def matrix(name: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32))

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
            matrix(prefix + name + ".weight", rows, cols)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantize(source: Path, target: Path, kind: str) -> Path:
    """llama-quantize source -> target in `kind` (a float32 source needs no --allow-requantize), 1 thread."""
    result = subprocess.run([str(llama_quantize()), str(source), str(target), kind, "1"], capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise RuntimeError(f"llama-quantize {kind} failed with status {result.returncode}")
    return target


def make_files(folder: Path) -> dict[str, Path]:
    """F32 and every TYPES file of one random Llama in `folder`, by type name."""
    files = {"F32": write_float32_llama(folder / "tiny-F32.gguf")}
    for kind in TYPES:
        files[kind] = quantize(files["F32"], folder / f"tiny-{kind}.gguf", kind)
    return files


def tensor_types(path: Path) -> dict[str, str]:
    """GGUF tensor name -> its type's name, as the file holds it."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}

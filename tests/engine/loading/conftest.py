"""The K-quant GGUF files of a tiny random Llama: llama-quantize's files committed in data/, and the float32
file they were made from, rewritten once per session from the seed (kquant_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.loading import kquant_files


@pytest.fixture(scope="session")
def kquant_gguf(tmp_path_factory) -> dict[str, Path]:
    """Type name -> the file: kquant_files.TYPES -> the committed files (kquant_files.committed_files()), "F32" ->
    the float32 file with the committed files' tokenizer, in a session folder. Needs no llama-quantize."""
    files = kquant_files.committed_files()
    vocab = kquant_files.vocab_of(files["Q8_0"])
    folder = tmp_path_factory.mktemp("kquant")
    return {"F32": kquant_files.write_float32_llama(folder / kquant_files.file_name("F32"), vocab=vocab), **files}

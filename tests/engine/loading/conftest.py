"""The K-quant GGUF files of a tiny random Llama, made once per session by llama.cpp's llama-quantize."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.loading import kquant_files


@pytest.fixture(scope="session")
def kquant_gguf(tmp_path_factory) -> dict[str, Path]:
    """Type name (F32 and kquant_files.TYPES) -> the file; skipped where llama-quantize is not built."""
    reason = kquant_files.missing_reason()
    if reason is not None:
        pytest.skip(reason)
    return kquant_files.make_files(tmp_path_factory.mktemp("kquant"))

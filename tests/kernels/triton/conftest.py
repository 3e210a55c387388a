"""Triton kernel tests: compiled on CUDA where there is a GPU, else run by Triton's interpreter on CPU tensors.

TRITON_INTERPRET must be set before triton.language is first imported (it decorates its own helpers then)
and before a kernel is decorated (when hearth.kernels.triton's modules are imported): tests/conftest.py sets it.
"""

from __future__ import annotations

import os

import pytest
import torch

IS_INTERPRETED = not torch.cuda.is_available()
if IS_INTERPRETED:
    # tests/conftest.py sets it first; repeated for a run that starts elsewhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

if IS_INTERPRETED:

    # triton 3.6.0's interpreter holds scalars as 1-element arrays and calls int() on them for range();
    # numpy 2.4 refuses that (triton-lang/triton#9171, fixed upstream after 3.6.0). Index the element.
    from triton.runtime import interpreter

    _patch_lang_tensor = interpreter._patch_lang_tensor

    def _patch_lang_tensor_numpy_2_4(tensor, scope) -> None:
        _patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = _patch_lang_tensor_numpy_2_4

DEVICE = torch.device("cpu" if IS_INTERPRETED else "cuda")

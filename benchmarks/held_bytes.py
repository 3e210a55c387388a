"""Weight bytes hearth holds for each GGUF file, against the file's own size.

    .venv/bin/python benchmarks/held_bytes.py FILE.gguf [FILE.gguf ...]

Each file is loaded as `hearth serve --model FILE` loads it (the format its tensor types choose) and the
distinct tensor storages of its layers, embedding, head and norms are counted
(LlamaModel.resident_weight_bytes). At one decode row a step streams every weight once, so where the step
is bound by memory its time follows these bytes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hearth.engine.config import EngineConfig
from hearth.engine.llm_engine import LLMEngine
from hearth.engine.loading.registry import ModelEntry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path, nargs="+")
    args = parser.parse_args()
    print(f"{'file':40s} {'format':>7s} {'file MB':>9s} {'held MB':>9s} {'held / file':>11s}")
    for path in args.gguf:
        entry = ModelEntry(id=path.stem, path=path)
        quantization = entry.serving_format()
        engine = LLMEngine(EngineConfig(model_path=str(path), quantization=quantization, max_num_seqs=2), entry)
        held, size = engine.runner.loaded.model.resident_weight_bytes(), os.path.getsize(path)
        print(f"{path.name:40s} {quantization:>7s} {size / 1e6:9.1f} {held / 1e6:9.1f} {held / size:11.2f}")
        engine.close()


if __name__ == "__main__":
    main()

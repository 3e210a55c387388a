"""Where a GGUF server's start goes, in-process: each import and load step timed in the order
`python -m hearth.server` takes them (torch, the server app, the config, the tokenizer, the engine), and whether
transformers was imported on the way (a GGUF of plain llama with a byte-level BPE vocabulary needs none of it).

    .venv/bin/python benchmarks/start_breakdown.py FILE.gguf
"""

import time

T0 = time.perf_counter()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    import torch  # noqa: F401

    marks = [("import torch", time.perf_counter())]
    import hearth.server.http.app  # noqa: F401

    marks.append(("server app", time.perf_counter()))
    from hearth.engine.config import EngineConfig
    from hearth.engine.llm_engine import LLMEngine
    from hearth.engine.loading.gguf_metadata import gguf_config, gguf_tokenizer
    from hearth.engine.loading.registry import ModelEntry

    path = Path(sys.argv[1])
    entry = ModelEntry(id="breakdown", path=path)
    quantization = entry.serving_format()
    marks.append(("hearth", time.perf_counter()))
    gguf_config(path)
    marks.append(("config", time.perf_counter()))
    gguf_tokenizer(path)
    marks.append(("tokenizer", time.perf_counter()))
    LLMEngine(EngineConfig(model_path=str(path), quantization=quantization), entry)
    marks.append(("engine (weights, KV cache, warm-up)", time.perf_counter()))
    previous = T0
    for name, at in marks:
        print(f"{name:>38}: {at - previous:6.2f} s")
        previous = at
    print(f"{'total':>38}: {previous - T0:6.2f} s")
    print(f"{'transformers imported':>38}: {'transformers' in sys.modules}")


if __name__ == "__main__":
    main()

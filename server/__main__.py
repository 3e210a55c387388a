"""python -m server: serve one model of the registry (or a local path) over HTTP.

Examples:
  python -m server                                  # the registry's default model on 127.0.0.1:8000
  python -m server --model /path/to/hf-llama-folder # any local HF Llama-family folder or .gguf file
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import engine  # noqa: F401  (forces HF offline before anything else imports transformers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default="models.yaml", help="model registry file (default: models.yaml)")
    parser.add_argument("--model", default=None,
                        help="registry id or alias, or a path to a local HF folder or .gguf file (default: the registry's default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto = cuda if available)")
    parser.add_argument("--dtype", default=None,
                        help="auto, bfloat16, float32 or float16 (default: the registry entry's, else auto = bfloat16)")
    parser.add_argument("--quantization", choices=("none", "int8", "int4"), default=None,
                        help="linear weights: none, int8 or int4 (default: the registry entry's, else none); int4 "
                             "loads a GGUF's 4-bit tensors as they are")
    parser.add_argument("--max-model-len", type=int, default=None, help="cap on prompt + completion tokens")
    parser.add_argument("--kv-cache-memory-gib", type=float, default=2.0, help="KV cache budget in GiB (default: 2)")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="most sequences decoded at once (default: 64)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=1024, help="token budget of one step (default: 1024)")
    parser.add_argument("--prefill-chunk-size", type=int, default=128,
                        help="prompt tokens per prefill chunk, and the granularity of prefix-cache hits (default: 128)")
    parser.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the KV of prompt prefixes seen before (default: on; --no-prefix-caching: off)")
    parser.add_argument("--logprobs-mode", choices=("raw", "processed"), default="raw",
                        help="logprobs of the raw model distribution (default) or of the processed one")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine
    from engine.loading.registry import ModelNotFoundError, ModelRegistry
    from server.app import build_app

    try:
        registry = ModelRegistry.load(args.models)
        entry = registry.resolve(args.model)
        if not entry.exists():
            raise ModelNotFoundError(
                f"model {entry.id!r} is not at {entry.path}; run `make setup` (or `python -m engine.loading.fetch`) first"
            )
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = EngineConfig(
        model_path=str(entry.path),
        dtype=args.dtype or entry.dtype,
        quantization=args.quantization or entry.quantization,
        device=args.device,
        max_model_len=args.max_model_len,
        kv_cache_memory_gib=args.kv_cache_memory_gib,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        prefill_chunk_size=args.prefill_chunk_size,
        logprobs_mode=args.logprobs_mode,
        enable_prefix_caching=args.prefix_caching,
    )
    engine_ = LLMEngine(config, entry)
    app = build_app(engine_, entry, is_engine_external=True)
    # HTTP in a second thread, the engine loop in this one (see server.async_engine for why).
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level))
    http = threading.Thread(target=server.run, name="hearth-http", daemon=True)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    http.start()
    try:
        app.state.async_engine.run_forever(lambda: server.should_exit or not http.is_alive())
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=10)
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())

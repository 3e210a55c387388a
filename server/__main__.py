"""python -m server: serve one model of the registry (or a local path) over HTTP.

Examples:
  python -m server                                  # the registry's default model on 127.0.0.1:8000
  python -m server --model /path/to/hf-llama-folder # any local HF Llama-family folder or .gguf file
"""

from __future__ import annotations

import argparse
import logging
import os
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
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="require `Authorization: Bearer KEY` on /v1/* (repeatable; also HEARTH_API_KEY)")
    parser.add_argument("--api-key-file", default=None, metavar="FILE", help="file of accepted keys, one a line")
    parser.add_argument("--metrics-require-key", action="store_true", help="require an API key on /metrics too")
    parser.add_argument("--max-waiting-requests", type=int, default=256,
                        help="requests that may wait for the engine; more get 429 (default: 256)")
    parser.add_argument("--max-request-bytes", type=int, default=4 << 20,
                        help="largest request body; larger ones get 413 (default: 4 MiB)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds in-flight requests may take to finish after SIGTERM/SIGINT (default: 30)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine
    from engine.loading.registry import ModelNotFoundError, ModelRegistry
    from server.app import build_app
    from server.auth import load_api_keys
    from server.config import ServerConfig

    try:
        server_config = ServerConfig(
            api_keys=load_api_keys(args.api_key, os.environ, args.api_key_file),
            metrics_require_key=args.metrics_require_key,
            max_waiting_requests=args.max_waiting_requests,
            max_request_bytes=args.max_request_bytes,
            shutdown_timeout_s=args.shutdown_timeout,
        )
        registry = ModelRegistry.load(args.models)
        entry = registry.resolve(args.model)
        if not entry.exists():
            raise ModelNotFoundError(
                f"model {entry.id!r} is not at {entry.path}; run `make setup` (or `python -m engine.loading.fetch`) first"
            )
    except (ModelNotFoundError, OSError, ValueError) as exc:
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
    app = build_app(engine_, entry, is_engine_external=True, config=server_config)
    if server_config.api_keys:
        logging.getLogger("hearth.server").info("API keys required on /v1/*%s (%d keys)",
                                                " and /metrics" if args.metrics_require_key else "",
                                                len(server_config.api_keys))
    # HTTP in a second thread, the engine loop in this one (see server.async_engine for why). Signals
    # reach this thread: they start the drain (server.shutdown), HTTP keeps answering (503 to new
    # requests) until the engine has finished or ended what was in flight.
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=5))
    http = threading.Thread(target=server.run, name="hearth-http", daemon=True)
    shutdown = app.state.shutdown
    shutdown.install_signal_handlers()
    http.start()
    try:
        app.state.async_engine.run_forever(lambda: not http.is_alive() or shutdown.engine_should_stop(app.state.async_engine))
    finally:
        server.should_exit = True
        http.join(timeout=15)
    return 0 if server.started else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C while the model loads, before the drain handlers are installed
        raise SystemExit(130) from None

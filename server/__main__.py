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
from server.engine_options import add_engine_options, engine_config, resolve_entry


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_engine_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from engine.llm_engine import LLMEngine
    from engine.loading.registry import ModelNotFoundError
    from server.app import build_app

    try:
        entry = resolve_entry(args)
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = engine_config(args, entry)
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

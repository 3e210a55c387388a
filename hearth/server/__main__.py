"""python -m hearth.server: serve one model of the registry (or a local path) over HTTP.

Examples:
  python -m hearth.server                                  # the registry's default model on 127.0.0.1:8000
  python -m hearth.server --model /path/to/hf-llama-folder # any local HF Llama-family folder or .gguf file
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import hearth.engine  # noqa: F401  (forces HF offline before anything else imports transformers)
from hearth.server.engine_options import add_engine_options, resolve_entry, start_engine

logger = logging.getLogger("hearth.server")
# After a tensor-parallel rank fails: seconds /health keeps answering 503 before the port closes (so a probe
# sees why), and seconds after which the process ends itself whatever is still blocked.
FAILURE_LINGER_S = 2.0
FAILURE_EXIT_S = 20.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hearth serve", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_engine_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
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

    from hearth.engine.loading.registry import ModelNotFoundError
    from hearth.server.config import ServerConfig
    from hearth.server.http.app import build_app
    from hearth.server.http.auth import load_api_keys

    try:
        server_config = ServerConfig(
            api_keys=load_api_keys(args.api_key, os.environ, args.api_key_file),
            metrics_require_key=args.metrics_require_key,
            max_waiting_requests=args.max_waiting_requests,
            max_request_bytes=args.max_request_bytes,
            shutdown_timeout_s=args.shutdown_timeout,
        )
        entry = resolve_entry(args)
    except (ModelNotFoundError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from hearth.engine.runtime import kernel_report_lines

    for line in kernel_report_lines():
        logger.info("kernels: %s", line)
    try:
        engine_ = start_engine(args, entry)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = build_app(engine_, entry, is_engine_external=True, config=server_config)
    if engine_.config.tensor_parallel_size > 1:
        _exit_when_failed(engine_)
    if server_config.api_keys:
        logger.info("API keys required on /v1/*%s (%d keys)",
                                                " and /metrics" if args.metrics_require_key else "",
                                                len(server_config.api_keys))
    # HTTP in a second thread, the engine loop in this one (see hearth.server.async_engine for why). Signals
    # reach this thread: they start the drain (hearth.server.http.shutdown), HTTP keeps answering (503 to new
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
        if engine_.failure is not None:
            time.sleep(FAILURE_LINGER_S)
        server.should_exit = True
        http.join(timeout=15)
        engine_.close()
    if engine_.failure is not None:
        logger.error("exiting: %s", engine_.failure)
        return 1
    return 0 if server.started else 1


def _exit_when_failed(engine_) -> None:
    """A watchdog: once a rank has failed, the process ends within FAILURE_EXIT_S even if the engine
    thread is still blocked in a collective (a hung rather than dead peer)."""
    def run() -> None:
        while engine_.failure is None:
            time.sleep(0.2)
        time.sleep(FAILURE_EXIT_S)
        logger.error("exiting after a failed rank: %s", engine_.failure)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=run, name="hearth-failure-exit", daemon=True).start()


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C while the model loads, before the drain handlers are installed
        raise SystemExit(130) from None

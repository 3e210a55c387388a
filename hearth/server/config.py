"""Server configuration (HTTP-side limits and keys): one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_REQUEST_BYTES = 4 << 20


@dataclass(frozen=True)
class ServerConfig:
    # Bearer keys accepted on /v1/*; empty: no key needed.
    api_keys: tuple[str, ...] = ()
    metrics_require_key: bool = False
    # Requests accepted but not yet running (being planned, queued for the engine or in its waiting
    # queue); one more gets 429.
    max_waiting_requests: int = 256
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # After SIGTERM/SIGINT, how long in-flight requests may take to finish before they are ended.
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for index, key in enumerate(self.api_keys):
            if not isinstance(key, str) or not key or key != key.strip() or not key.isprintable():
                raise ValueError(f"api_keys[{index}] must be a non-empty printable string without surrounding "
                                 f"whitespace, got {key!r}")
        if self.metrics_require_key and not self.api_keys:
            raise ValueError("metrics_require_key needs at least one api key, got api_keys=()")
        if not 1 <= self.max_waiting_requests <= 1_000_000:
            raise ValueError(f"max_waiting_requests must be in [1, 1000000], got {self.max_waiting_requests}")
        if not 1024 <= self.max_request_bytes <= 1 << 30:
            raise ValueError(f"max_request_bytes must be in [1024, {1 << 30}], got {self.max_request_bytes}")
        if not 0 <= self.shutdown_timeout_s <= 3600:
            raise ValueError(f"shutdown_timeout_s must be in [0, 3600], got {self.shutdown_timeout_s}")

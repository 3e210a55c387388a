"""The tensor-parallel process group: who this rank is, and the few collectives the sharded forward needs.

Three torch.distributed groups over the same ranks:
- the default group, made by the rendezvous, also gathers load-time figures; its timeout
  (STARTUP_TIMEOUT_S) bounds how long rank 0 waits for ranks that never start or never finish loading
  (ranks load equal shares at the same time);
- control (gloo, CPU tensors): each step's inputs, broadcast from rank 0. A timeout is a property of each
  process's own group object: the other ranks wait on it while the server is idle, so theirs is long
  (IDLE_TIMEOUT_S), while rank 0's is COMPUTE_TIMEOUT_S (gloo's broadcast returns only once every peer
  has taken the data, so a hung peer would otherwise block rank 0 for as long);
- compute (gloo on CPU, nccl on CUDA): the collectives inside a forward. Ranks run the same layers in
  lockstep, so a wait longer than COMPUTE_TIMEOUT_S means a peer is gone or hung.
A peer that dies closes its sockets, which fails a collective waiting on it at once.

A collective that fails marks the group failed and raises RankFailure: the ranks may now be at different
points of a step, so the caller shuts down rather than retrying (server: /health 503, exit non-zero).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")
STARTUP_TIMEOUT_S = 300.0
IDLE_TIMEOUT_S = 365 * 24 * 3600.0
COMPUTE_TIMEOUT_S = 30.0
_STOP, _STEP = 0, 1


class RankFailure(RuntimeError):
    """A rank died, hung or fell out of step: the group cannot run another forward."""


def choose_backend(device: torch.device, override: str = "auto") -> str:
    if override != "auto":
        return override
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass(frozen=True)
class GroupConfig:
    rank: int
    world_size: int
    backend: str
    # tcp://host:port (ranks spawned by rank 0) or env:// (torchrun's MASTER_ADDR, MASTER_PORT).
    init_method: str
    # The rank's index on its host: its CUDA device.
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.init_method.startswith(("tcp://", "env://")):
            raise ValueError(f"init_method must start with tcp:// or env://, got {self.init_method!r}")
        if self.local_rank < 0:
            raise ValueError(f"local_rank must be >= 0, got {self.local_rank}")


class TensorParallelGroup:
    """This rank's view of the group. With world_size 1 every collective is the identity and no
    torch.distributed state exists, so the single-process forward runs the same code."""

    def __init__(self, rank: int, world_size: int, device: torch.device, control=None, compute=None) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self._control, self._compute = control, compute
        self.failure: str | None = None
        # Set by hearth.engine.distributed.launch: ranks this process spawned, and the thread count to restore.
        self.local_ranks = None
        self.previous_num_threads: int | None = None

    @classmethod
    def single(cls, device: torch.device) -> TensorParallelGroup:
        return cls(0, 1, device)

    @classmethod
    def initialize(cls, config: GroupConfig, device: torch.device) -> TensorParallelGroup:
        dist.init_process_group("gloo", init_method=config.init_method, rank=config.rank,
                                world_size=config.world_size, timeout=timedelta(seconds=STARTUP_TIMEOUT_S))
        ranks = list(range(config.world_size))
        control_timeout = COMPUTE_TIMEOUT_S if config.rank == 0 else IDLE_TIMEOUT_S
        control = dist.new_group(ranks, timeout=timedelta(seconds=control_timeout), backend="gloo")
        compute = dist.new_group(ranks, timeout=timedelta(seconds=COMPUTE_TIMEOUT_S), backend=config.backend)
        logger.info("rank %d of %d joined (%s on %s)", config.rank, config.world_size, config.backend, device)
        return cls(config.rank, config.world_size, device, control, compute)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            logger.error("tensor-parallel group failed: %s", reason)

    def _run(self, what: str, fn):
        if self.failure is not None:
            raise RankFailure(self.failure)
        try:
            return fn()
        except RuntimeError as exc:  # gloo and nccl report a lost or late peer as RuntimeError
            self.fail(f"{what} failed on rank {self.rank}: {exc}")
            raise RankFailure(self.failure) from exc

    # ---- collectives of the forward (compute group) -----------------------------------------------

    def all_reduce(self, x: Tensor) -> Tensor:
        """Sum of every rank's x, the same on every rank. Gathered, then summed in rank order in float32:
        each element's summation order is then fixed, whatever the tensor's size (a ring all-reduce sums
        an element in an order that depends on where its chunk falls, which would make a row's result
        depend on the batch's row count at 3+ ranks, and so break batch invariance)."""
        if self.world_size == 1:
            return x
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        self._run("all_gather", lambda: dist.all_gather(parts, x, group=self._compute))
        total = parts[0].float()
        for part in parts[1:]:
            total += part
        return total.to(x.dtype)

    def gather_columns(self, x: Tensor, widths: tuple[int, ...]) -> Tensor | None:
        """x [rows, widths[rank]] on every rank -> [rows, sum(widths)] on rank 0 (ranks' columns side by
        side, in rank order); None on the other ranks."""
        if self.world_size == 1:
            return x
        if x.shape[0] == 0:
            return x.new_empty(0, sum(widths)) if self.rank == 0 else None
        width = max(widths)
        padded = x if x.shape[1] == width else torch.cat([x, x.new_zeros(x.shape[0], width - x.shape[1])], 1)
        padded = padded.contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)] if self.rank == 0 else None
        self._run("gather", lambda: dist.gather(padded, parts, dst=0, group=self._compute))
        if self.rank != 0:
            return None
        return torch.cat([part[:, :w] for part, w in zip(parts, widths, strict=True)], dim=1)

    # ---- start-up and control groups ---------------------------------------------------------------

    def all_gather_int(self, value: int) -> list[int]:
        """Every rank's value, in rank order (load-time figures such as weight bytes)."""
        if self.world_size == 1:
            return [value]
        parts = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        self._run("all_gather", lambda: dist.all_gather(parts, torch.tensor([value])))  # the default group
        return [int(p.item()) for p in parts]

    def send_step(self, payload: Tensor) -> None:
        """Rank 0: hand every rank this step's inputs (hearth.engine.distributed.step encodes them)."""
        header = torch.tensor([_STEP, payload.numel()], dtype=torch.int64)
        self._run("broadcast", lambda: (dist.broadcast(header, 0, group=self._control),
                                        dist.broadcast(payload, 0, group=self._control)))

    def receive_step(self) -> Tensor | None:
        """Other ranks: the next step's inputs, or None once rank 0 has stopped the group."""
        header = torch.empty(2, dtype=torch.int64)
        self._run("broadcast", lambda: dist.broadcast(header, 0, group=self._control))
        kind, size = header.tolist()
        if kind == _STOP:
            return None
        payload = torch.empty(size, dtype=torch.int64)
        self._run("broadcast", lambda: dist.broadcast(payload, 0, group=self._control))
        return payload

    # ---- shutdown -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Rank 0: stop the other ranks (or kill those it spawned, once failed) and leave the group.
        Other ranks: leave the group. Idempotent."""
        if self.world_size == 1 or not dist.is_initialized():
            return
        if self.rank == 0 and self.failure is None:
            try:
                header = torch.tensor([_STOP, 0], dtype=torch.int64)
                dist.broadcast(header, 0, group=self._control)
            except RuntimeError as exc:
                self.fail(f"stopping the ranks failed: {exc}")
        if self.local_ranks is not None:
            self.local_ranks.join(kill=self.failure is not None)
        try:
            dist.destroy_process_group()
        except RuntimeError as exc:  # already torn down by a failed peer: nothing left to release
            logger.warning("leaving the process group: %s", exc)
        if self.previous_num_threads is not None:
            torch.set_num_threads(self.previous_num_threads)

"""Starting the ranks, and the loop the ranks other than 0 run.

- One host: rank 0 (the process that serves) spawns ranks 1..N-1 with torch.multiprocessing before it
  loads its own shard, and a watchdog thread marks the group failed as soon as one of them exits.
  Spawned ranks exit when rank 0 stops them, when their broadcast from rank 0 fails (rank 0 gone), or
  when their parent process changes (a second watch, in case rank 0 was killed mid-step).
- torchrun: every rank reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the
  environment; rank 0 serves and the others run the worker entry (hearth.engine.worker.run_worker).
The worker entry is passed in (`worker`): it loads a model and a KV cache, which this module, below
loading and model, does not import. torchrun's agent ends a host's ranks
  when one of them fails.
On CPU the host's cores are divided among its ranks (unless OMP_NUM_THREADS says otherwise): N ranks
of all cores each would oversubscribe them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hearth.engine.config import EngineConfig
from hearth.engine.loading.registry import ModelEntry

from .group import STARTUP_TIMEOUT_S, GroupConfig, TensorParallelGroup, choose_backend

logger = logging.getLogger(__name__)

_current: TensorParallelGroup | None = None


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """A rank's device: cuda:LOCAL_RANK when the engine runs on CUDA, else `device`."""
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(f"device {device} names one GPU; with tensor parallelism give --device cuda "
                         "(rank r runs on cuda:LOCAL_RANK; choose GPUs with CUDA_VISIBLE_DEVICES)")
    return torch.device("cuda", local_rank)


def torchrun_config(config: EngineConfig) -> GroupConfig | None:
    """This process's rank under torchrun (RANK and WORLD_SIZE set), else None."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    world_size = int(env["WORLD_SIZE"])
    if world_size != config.tensor_parallel_size:
        raise ValueError(f"tensor_parallel_size={config.tensor_parallel_size} but torchrun started "
                         f"WORLD_SIZE={world_size} ranks; they must be equal")
    local_rank = int(env.get("LOCAL_RANK", 0))
    device = rank_device(config.torch_device, local_rank)
    return GroupConfig(rank=int(env["RANK"]), world_size=world_size, local_rank=local_rank,
                       backend=choose_backend(device, config.distributed_backend), init_method="env://")


def _join(group_config: GroupConfig, config: EngineConfig) -> TensorParallelGroup:
    global _current
    device = rank_device(config.torch_device, group_config.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _current = TensorParallelGroup.initialize(group_config, device)
    return _current


Worker = Callable[[EngineConfig, ModelEntry, GroupConfig], int]


def start_group(config: EngineConfig, entry: ModelEntry, worker: Worker | None = None) -> TensorParallelGroup:
    """The group this process loads its shard for. With tensor_parallel_size 1, a group of one (no
    torch.distributed). In a rank that joined already (join_group), that group. Under torchrun, joins
    it as rank 0. Otherwise this process becomes rank 0 and spawns the others on this host, each running
    `worker` (a module-level function: the spawned process imports it)."""
    global _current
    if config.tensor_parallel_size == 1:
        return TensorParallelGroup.single(config.torch_device)
    if _current is not None and torch.distributed.is_initialized():
        return _current
    torchrun = torchrun_config(config)
    if torchrun is not None:
        return _join(torchrun, config)
    world_size = config.tensor_parallel_size
    if worker is None:
        raise ValueError(f"tensor_parallel_size={world_size} needs a worker entry for the spawned ranks")
    device = rank_device(config.torch_device, 0)
    if device.type == "cuda" and torch.cuda.device_count() < world_size:
        # Checked here, before any rank starts: a clearer error than the ranks' own.
        raise ValueError(f"tensor_parallel_size={world_size} needs {world_size} GPUs on this host, "
                         f"{torch.cuda.device_count()} visible")
    backend = choose_backend(device, config.distributed_backend)
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    num_threads = None
    if config.torch_device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        num_threads = max(1, torch.get_num_threads() // world_size)
    ranks = LocalRanks([_WorkerSpec(config, entry, GroupConfig(r, world_size, backend, init_method, local_rank=r),
                                    num_threads, worker) for r in range(1, world_size)])
    try:
        ranks.wait_until_joining()
        group = _join(GroupConfig(0, world_size, backend, init_method), config)
    except BaseException:
        ranks.join(kill=True)
        raise
    if num_threads is not None:
        group.previous_num_threads = torch.get_num_threads()
        torch.set_num_threads(num_threads)
    group.local_ranks = ranks
    ranks.watch(group)
    return group


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class _WorkerSpec:
    config: EngineConfig
    entry: ModelEntry
    group: GroupConfig
    num_threads: int | None
    worker: Worker


class LocalRanks:
    """Ranks 1..N-1 spawned by rank 0 on this host (daemon processes: they never outlive it)."""

    def __init__(self, specs: list[_WorkerSpec]) -> None:
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")
        # Each rank says on its pipe when it is about to join the group (wait_until_joining).
        pipes = [context.Pipe(duplex=False) for _ in specs]
        self.joining = [reader for reader, _ in pipes]
        self.processes = [context.Process(target=_spawned_main, args=(spec, os.getpid(), writer), daemon=True,
                                          name=f"hearth-rank-{spec.group.rank}") for spec, (_, writer) in zip(specs, pipes)]
        self.is_closing = False
        for process, (_, writer) in zip(self.processes, pipes):
            process.start()
            writer.close()  # the rank holds its own end
            logger.info("tensor parallel: rank %s is pid %d", process.name.rsplit("-", 1)[1], process.pid)

    def wait_until_joining(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Block until every rank is about to join the group. A rank that exits first (an import or
        configuration error in the new process) raises here at once, instead of leaving rank 0 in the
        rendezvous for its whole timeout."""
        from multiprocessing.connection import wait

        pending = dict(zip(self.joining, self.processes))
        deadline = time.monotonic() + timeout_s
        while pending:
            by_sentinel = {p.sentinel: p for p in pending.values()}
            ready = wait([*pending, *by_sentinel], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{', '.join(p.name for p in pending.values())} not started after {timeout_s:.0f} s")
            exited = {by_sentinel[s] for s in ready if s in by_sentinel}
            for reader in [r for r in ready if r in pending]:
                try:
                    reader.recv()
                except EOFError:  # its end closed unsaid: the rank is exiting
                    pending[reader].join(10)
                    exited.add(pending[reader])
                    continue
                exited.discard(pending.pop(reader))  # it said so before exiting: the watchdog reports it
            if exited:
                dead = sorted(exited, key=lambda p: p.name)
                raise RuntimeError(", ".join(f"{p.name} (pid {p.pid}) exited with code {p.exitcode} before joining "
                                             "the group" for p in dead))

    def watch(self, group: TensorParallelGroup) -> None:
        """Mark `group` failed as soon as a rank exits while it should be running."""
        from multiprocessing.connection import wait

        def run() -> None:
            ready = wait([p.sentinel for p in self.processes])
            if self.is_closing:
                return
            dead = [p for p in self.processes if p.sentinel in ready]
            group.fail(", ".join(f"{p.name} (pid {p.pid}) exited with code {p.exitcode}" for p in dead))

        threading.Thread(target=run, name="hearth-rank-watchdog", daemon=True).start()

    def join(self, kill: bool = False, timeout_s: float = 10.0) -> None:
        self.is_closing = True
        deadline = time.monotonic() + (0 if kill else timeout_s)
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)


def _spawned_main(spec: _WorkerSpec, parent_pid: int, joining) -> None:
    """A spawned rank: ends itself if rank 0's process goes away, says on `joining` that it is about to join
    the group, then runs the spec's worker entry."""
    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_parent, name="hearth-parent-watch", daemon=True).start()
    if spec.num_threads is not None:
        torch.set_num_threads(spec.num_threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {spec.group.rank} %(levelname)s %(name)s: %(message)s")
    joining.send(True)
    joining.close()
    raise SystemExit(spec.worker(spec.config, spec.entry, spec.group))


def join_group(config: EngineConfig, group_config: GroupConfig | None = None) -> TensorParallelGroup:
    """A rank other than 0 joins its group (spawned: `group_config`; torchrun: from the environment).
    Ctrl-C is left to rank 0, which stops the group; so is torchrun's SIGTERM (sent to every rank at
    once), so that rank 0 can drain its requests with the other ranks still running. A rank spawned by
    rank 0 keeps the default SIGTERM: rank 0's exit terminates it."""
    group_config = group_config or torchrun_config(config)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if group_config.init_method == "env://":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _join(group_config, config)

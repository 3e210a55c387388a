"""Device-to-device copy bandwidth, and the weight-read floor of one decode step it implies.

A decode step reads every weight once: its time is at least weight bytes / bandwidth. The copy's rate counts
bytes read plus bytes written (as the README's device notes do); the floor uses that rate as the rate at
which HBM can stream.

Usage: python benchmarks/gpu/copy_bandwidth.py [--gib 4] [--weights DIR_OR_BYTES]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def copy_bandwidth(num_bytes: int, iters: int = 20) -> float:
    """Bytes read + written per second by torch's device-to-device copy (median of `iters`)."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * num_bytes / sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4.0, help="size of the copied buffer")
    parser.add_argument("--weights", default=None, help="a model folder (its *.safetensors) or a byte count")
    args = parser.parse_args(argv)
    rate = copy_bandwidth(int(args.gib * 2**30))
    print(f"{torch.cuda.get_device_name()}: device-to-device copy {rate / 1e12:.2f} TB/s (read + written)")
    if args.weights:
        path = Path(args.weights)
        num_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors")) if path.is_dir() else int(args.weights)
        print(f"weights {num_bytes / 1e9:.2f} GB: weight-read floor {num_bytes / rate * 1e3:.2f} ms per decode step; "
              f"1.3x floor = {1.3 * num_bytes / rate * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

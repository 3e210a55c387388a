"""hearth: a local inference engine serving OpenAI-style chat completions over Hugging Face models.

Three rooms, imported one way: hearth.server -> hearth.engine -> hearth.kernels.
"""

__version__ = "0.1.0"

"""hearth's engine: model loading, scheduling, KV cache and the decode loop.

Importing this package forces Hugging Face libraries offline: a model is always a local folder or file.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

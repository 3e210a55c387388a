#!/usr/bin/env bash
# Fills .whl/ (ignored by git, carried to the device with `carry: [".whl"]`) with what the device image lacks:
# wheels for its Python 3.12 on manylinux x86_64 (the versions hearth runs with here), and the default model's
# config, tokenizer and chat template (a few MB; device_check.sh builds random weights of its shape there).
# Needs pip and network access to the package index; run from anywhere in the repository, once per checkout.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PYTHON=${PYTHON:-$(command -v .venv/bin/python || command -v python3)}
MODEL_DIR=${HEARTH_CACHE:-$HOME/.cache/hearth}/models/SmolLM2-135M-Instruct
# Not in the device image (KINDS.md's package list); pydantic-core must match pydantic's own pin.
PINS=(
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.16.0
  gguf==0.19.0 swagger-ui-bundle-v2==5.31.0
  xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p .whl
grep -qxF "/.whl/" .gitignore || { echo "/.whl/ is missing from .gitignore" >&2; exit 1; }
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${PINS[@]}"
# One version of each: two would stop the device's install.
dupes=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z' 'a-z' | sort | uniq -d)
[ -z "$dupes" ] || { echo "several versions in .whl/ of: $dupes (delete the old ones)" >&2; exit 1; }
mkdir -p .whl/default-model
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  if [ -f "$MODEL_DIR/$f" ]; then cp "$MODEL_DIR/$f" .whl/default-model/; fi
done
[ -f .whl/default-model/tokenizer.json ] || { echo "no tokenizer in $MODEL_DIR: run make setup first" >&2; exit 1; }
ls -1 .whl
du -sh .whl

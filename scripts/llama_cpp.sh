#!/usr/bin/env bash
# Installs llama.cpp's Python binding (llama-cpp-python, pinned) into a git-ignored virtual
# environment, built from source for this machine's CPU with nothing but the library the binding
# loads. crates/infer/tests/gguf.rs loads the GGUF that `pazar model export --format gguf` writes
# with it, and `scripts/llama_cpp_bench.py` times llama.cpp on the same weights.
#
# Usage: scripts/llama_cpp.sh            (venv in .venv-llama/, or $PAZAR_LLAMA_VENV)
# A second run with the venv present does nothing. Needs python3 (with venv), a C/C++ compiler
# and PyPI; pip brings CMake and Ninja as wheels. The build uses $CMAKE_BUILD_PARALLEL_LEVEL
# jobs (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
VENV=${PAZAR_LLAMA_VENV:-.venv-llama}
STAMP="$VENV/.pazar-llama-cpp-python-$VERSION"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
    echo "llama-cpp-python $VERSION already installed in $VENV"
    exit 0
fi

"${PYTHON:-python3}" -m venv "$VENV"
# CPU only, native instructions; no multimodal (mtmd) library, no HTTPS, no "common" library
# (see llama_cpp_no_common.cmake). llama.cpp's tests, tools, examples and server are off already
# when it is built as a subproject.
export CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
-DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/scripts/llama_cpp_no_common.cmake"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
"$VENV/bin/pip" install --disable-pip-version-check \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
touch "$STAMP"

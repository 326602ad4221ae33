#!/usr/bin/env bash
# Installs llama.cpp's Python binding (llama-cpp-python, pinned) into a git-ignored virtual
# environment, built from source for this machine's CPU with nothing but the library the binding
# loads. crates/infer/tests/gguf.rs loads the GGUF that `pazar model export --format gguf` writes
# with it, and `scripts/llama_cpp_driver.py bench` times llama.cpp on the same weights.
#
# Usage: scripts/llama_cpp.sh            (venv in .venv-llama/, or $PAZAR_LLAMA_VENV)
# A second run with the venv present does nothing. Needs python3 (with venv), a C/C++ compiler
# and PyPI (a 77 MB sdist; pip brings CMake and Ninja as wheels). The build uses
# $CMAKE_BUILD_PARALLEL_LEVEL jobs (default 2): about 260 CPU-seconds (measured on this 2-core
# machine under load: 4 min 47 s wall, 238 s user + 18 s system).
#
# PAZAR_LLAMA_NATIVE=0 builds for any x86-64 CPU with AVX2, FMA and F16C instead of this one
# (-march=native): for a venv cached between CI machines, where a native build can die with
# SIGILL on an older CPU. It is also the instruction set our engine dispatches to, which makes
# `pazar bench infer`'s comparison like for like.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
VENV=${PAZAR_LLAMA_VENV:-.venv-llama}
if [ "${PAZAR_LLAMA_NATIVE:-1}" = 0 ]; then
    CPU=avx2
    CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
else
    CPU=native
    CPU_ARGS="-DGGML_NATIVE=ON"
fi
STAMP="$VENV/.pazar-llama-cpp-python-$VERSION-$CPU"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
    echo "llama-cpp-python $VERSION ($CPU) already installed in $VENV"
    exit 0
fi

# Another version or CPU target: start from an empty venv (pip would keep the installed build),
# but never remove a directory that is not a venv.
if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "$VENV exists and is not a Python venv; not replacing it" >&2
    exit 1
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
# CPU only; no multimodal (mtmd) library, no HTTPS, no "common" library
# (see llama_cpp_no_common.cmake). llama.cpp's tests, tools, examples and server are off already
# when it is built as a subproject.
export CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF $CPU_ARGS \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
-DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/scripts/llama_cpp_no_common.cmake"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
# No wheel cache: pip would reuse a wheel built for another CPU target.
"$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
touch "$STAMP"

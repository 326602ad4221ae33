#!/usr/bin/env bash
# Installs the official OpenAI Python client (the `openai` package from PyPI, pinned) into a
# git-ignored virtual environment. scripts/openai_client_check.py drives `pazar infer serve`
# with it: an independent, widely used client is the test that the local API speaks OpenAI's
# protocol, not our reading of it.
#
# Usage: scripts/openai_venv.sh            (venv in .venv-openai/, or $PAZAR_OPENAI_VENV)
# A second run with the venv present does nothing. Needs python3 (with venv) and PyPI (pure
# Python wheels; nothing is compiled).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.63.0
VENV=${PAZAR_OPENAI_VENV:-.venv-openai}
STAMP="$VENV/.pazar-openai-$VERSION"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
    echo "openai $VERSION already installed in $VENV"
    exit 0
fi

"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check --quiet "openai==$VERSION"
"$VENV/bin/python" -c "import openai; print('openai', openai.__version__)"
touch "$STAMP"

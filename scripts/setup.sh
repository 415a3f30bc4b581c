#!/usr/bin/env bash
# Build the project's one environment (.venv) on a fresh machine; safe to re-run.
#
# FEniCSx (dolfinx) comes from Debian's python3-dolfinx-real and is importable
# only from Debian's /usr/bin/python3, so the venv is made from that interpreter
# with --system-site-packages and numpy<2 (Debian's dolfinx is built against the
# numpy 1 ABI). Without root or apt the venv is made from any python3, the FEM code
# falls back to its light (scikit-fem) backend, and numpy 2 is fine.
#
# Debian's chromium is installed for the campaign page's browser test (Playwright
# drives /usr/bin/chromium; no browser is ever downloaded by Playwright). Without
# root/apt that test is skipped with a message saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

have_debian_dolfinx() { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import dolfinx" >/dev/null 2>&1; }
have_debian_venv() { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1; }

if ! have_debian_dolfinx || ! have_debian_venv; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing FEniCSx (python3-dolfinx-real) and python3-venv from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3-dolfinx-real python3-venv >/dev/null
    else
        echo "[setup] no root/apt: skipping FEniCSx; the light FEM backend will be used" >&2
    fi
fi

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing chromium from Debian (browser test of \`cryoopt serve\`)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
            || echo "[setup] could not install chromium; the browser test will be skipped" >&2
    else
        echo "[setup] no root/apt: not installing chromium; the browser test of \`cryoopt serve\` will be skipped" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    if have_debian_venv; then
        echo "[setup] creating $VENV from Debian's python3 (sees dolfinx)"
        /usr/bin/python3 -m venv --system-site-packages "$VENV"
    else
        echo "[setup] creating $VENV from $(command -v python3)"
        python3 -m venv "$VENV"
    fi
fi

# numpy<2 only where the venv sees Debian's dolfinx (numpy 1 ABI); everywhere else numpy 2 is fine.
pins=()
if "$VENV/bin/python" -c "import dolfinx" >/dev/null 2>&1 || { have_debian_dolfinx && [ -f "$VENV/pyvenv.cfg" ] \
        && grep -q "include-system-site-packages = true" "$VENV/pyvenv.cfg"; }; then
    pins+=("numpy<2")
fi
echo "[setup] installing cryoopt with its test, ui and ray extras into $VENV ${pins[*]:+(pinned: ${pins[*]})}"
# torch==2.13.0 explicitly: the CPU build on disk; a bare 'torch' would fetch a CUDA build.
# The ray extra too, so that CI runs the Ray tests (they skip where Ray is absent).
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 "${pins[@]}" -e ".[test,ui,ray]"
echo "[setup] done"

#!/usr/bin/env bash
# Install bnnflow-board into a PYNQ board image's Python, next to its pynq and numpy.
#
#   Pynq-Z2  PYNQ 3.0/3.1 image (Ubuntu 22.04, armv7l, Python 3.10, numpy 1.21)
#   Ultra96  PYNQ 3.x / Avnet v3.0.1 image (aarch64, Python 3.10)
#
# Run it as root from the deployment package (the PYNQ images keep pynq in a
# virtual environment, /usr/local/share/pynq-venv, that /etc/profile.d/pynq_venv.sh
# activates for root):  sudo ./install.sh
#
# What it installs, and why this way:
#  1. finn-plus-driver 1.6.1 and qonnx 1.0.0 WITHOUT their dependencies. They
#     declare onnx, onnxruntime, grpcio, h5py and dataset loaders; running a
#     design needs none of them, and onnx/onnxruntime have no wheels for the
#     Pynq-Z2's 32-bit ARM (bnnflow-board covers qonnx's one onnx import).
#  2. What they do import: bitstring 4 (whose bitarray builds from C source where
#     pip finds no wheel, as on armv7) and click, with the image's numpy pinned
#     by a constraints file so that pip can never upgrade it.
#  3. bnnflow-board from this package, without dependencies (pynq and numpy are
#     the image's).
# Environment: PYTHON (default python3), BNNFLOW_BOARD_ALLOW_NO_PYNQ=1 to install
# where pynq is absent (only useful off-board).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f /etc/profile.d/pynq_venv.sh ]; then
    # shellcheck disable=SC1091
    source /etc/profile.d/pynq_venv.sh
fi
py="${PYTHON:-python3}"

case "$(uname -m)" in
    armv7l) echo "install.sh: armv7l: a Zynq-7000 board (Pynq-Z2)" ;;
    aarch64) echo "install.sh: aarch64: a Zynq UltraScale+ board (Ultra96)" ;;
    *) echo "install.sh: $(uname -m) is not a PYNQ board's CPU; installing anyway" ;;
esac

"$py" - <<'EOF'
import os, sys
if sys.version_info < (3, 10):
    sys.exit(f"install.sh: Python {sys.version.split()[0]} is too old; bnnflow-board needs 3.10 (PYNQ 3.x images)")
try:
    import numpy
except ImportError:
    sys.exit("install.sh: numpy is not installed in this Python; run from the PYNQ image's environment")
if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit(f"install.sh: numpy {numpy.__version__}: finn-plus-driver needs numpy 1.x")
try:
    import pynq  # noqa: F401
except ImportError:
    if os.environ.get("BNNFLOW_BOARD_ALLOW_NO_PYNQ") != "1":
        sys.exit("install.sh: pynq is not importable: run as root from the PYNQ environment (sudo ./install.sh)")
EOF

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$py" -c 'import numpy; print("numpy==" + numpy.__version__)' > "$constraints"
echo "install.sh: keeping $(cat "$constraints")"

"$py" -m pip install --no-deps "finn-plus-driver==1.6.1" "qonnx==1.0.0"
"$py" -m pip install -c "$constraints" "bitstring>=4.0,<5" "click>=8"
# pip builds in the source tree; build a copy so that the package stays as it was checksummed
work="$(mktemp -d)"
trap 'rm -f "$constraints"; rm -rf "$work"' EXIT
cp -r "$here/bnnflow-board" "$work/"
"$py" -m pip install --no-deps "$work/bnnflow-board"

"$py" - "$constraints" <<'EOF'
import sys
import numpy
pinned = open(sys.argv[1]).read().strip().split("==")[1]
if numpy.__version__ != pinned:
    sys.exit(f"install.sh: numpy changed from {pinned} to {numpy.__version__}")
from bnnflow_board._qonnx import ensure_qonnx_importable
ensure_qonnx_importable()
import finn_plus_driver.packing  # noqa: F401
import bnnflow_board
print(f"install.sh: bnnflow-board {bnnflow_board.__version__} installed (numpy {numpy.__version__} kept)")
EOF
echo "install.sh: next:  bnnflow-board check $here   then   bnnflow-board bench $here"

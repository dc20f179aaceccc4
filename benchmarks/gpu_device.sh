#!/usr/bin/env bash
# The GPU suite on a bare GPU machine that has PyTorch, h5py, OpenCV, typer, timm and
# matplotlib but not doll's other dependencies (the image of a lent device machine), with no
# network: those travel as wheels in .whl/ beside this repository (not committed), and doll
# runs from this checkout (no install). Writes $OUT/gpu-suite.json (OUT: the folder that comes
# back; ./artifacts without it) and $OUT/gpu-suite.log, the suite's JSON after every part.
#
#   bash benchmarks/gpu_device.sh             # the suite (about 9 minutes; GPU_SUITE_BUDGET)
#   bash benchmarks/gpu_device.sh --dry-run   # toy sizes on the CPU
#
# .whl/ for Python 3.12 on x86_64 (fetched where PyPI is reachable, versions as CI installs them):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl captum deflate pydantic pydantic-core annotated-types typing-extensions typing-inspection \
#     pydicom segmentation-models-pytorch
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${DOLL_PYTHON:-python3}
OUT_DIR=${OUT:-$PWD/artifacts}
SITE=${DOLL_SITE:-/tmp/doll-site}
mkdir -p "$OUT_DIR" "$SITE/src"
NEEDED="import captum, segmentation_models_pytorch, deflate, pydantic, pydicom"
if ! $PY -c "$NEEDED" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_device.sh: $PY lacks doll's dependencies and there is no .whl/ to install them from (see this script's head)" >&2
    exit 2
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/lib" .whl/*.whl || exit 2
fi
# doll and its CLI from this checkout, under the names an install gives them (the CLI's folder is cli/)
ln -sfn "$PWD/doll" "$SITE/src/doll"
ln -sfn "$PWD/cli" "$SITE/src/doll_cli"
export PYTHONPATH="$SITE/src:$SITE/lib${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHON=$PY
$PY -c "$NEEDED; import doll, doll_cli.main, torch; print('gpu_device.sh: doll from', doll.__file__, '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())" >&2 || exit 2
bash benchmarks/gpu.sh "$@" "$OUT_DIR/gpu-suite.json" 2>&1 | tee "$OUT_DIR/gpu-suite.log"

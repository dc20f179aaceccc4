#!/usr/bin/env bash
# The GPU suite (issue 37): one command a GPU server runs in under 10 minutes, one JSON out.
#
#   bash benchmarks/gpu.sh [OUT.json]        # default: gpu-suite.json in the current folder
#
# Rows: the IG engine against Captum (naive and target-batched), DenseNet-121 at 224 px;
# training / pretraining / fine-tuning throughput with and without AMP + channels_last and
# with torch.compile; `doll explain` end to end on 2,560 synthetic images with the GPU's
# utilisation sampled by nvidia-smi; explain's distillation on CUDA against the CPU's numbers
# (distill_device.py --synthetic); NCCL DDP with 2 processes where 2 GPUs exist; and what
# the GPUs would wait on: the cold read of a JPEG split into decoding and preprocessing beside
# nvJPEG (jpeg_decode.py), and the data path's loaders on this server's cores (scale.py at
# 2,000 images), set against the GPUs' training images/s in "bounds".
# Each part's JSON is kept under $WORK; a part that fails is recorded as such, the rest run.
#   bash benchmarks/gpu.sh --dry-run [OUT.json]   # every part at toy sizes on the CPU (CI runs it: no rot)
# The parts share a budget of GPU_SUITE_BUDGET seconds (540 by default): a part gets at most what
# is left, and one that would start with under 15 s left is recorded as skipped. OUT is
# rewritten after every part.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-gpu-suite.json}
WORK=$(mktemp -d -t doll-gpu-XXXX)
PY=${PYTHON:-python}
export DOLL_CACHE="$WORK/cache"
gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$DRY" = 1 ]; then
  DEV=cpu; gpus=0
  IG_ARGS="--arch resnet18 --image-size 32 --images 1 --steps 2 --classes 3 --targets 2 --skip-captum-batched"
  TRAIN_ARGS="--arch resnet18 --encoder resnet18 --image-size 32 --batch-size 2 --steps 1 --warmup 0"
  PIPE_ARGS="--arch resnet18 --image-size 32 --images 16 --members 1 --steps 1"
  DISTILL_ARGS="--synthetic 8 --size 32"
  JPEG_ARGS="--images 8"
  SCALE_ARGS="--sizes 40 --workers 0 --stages classify,pretrain"
else
  if [ "$gpus" -lt 1 ]; then echo "gpu.sh: no CUDA device; this suite is for a GPU server (--dry-run runs it on the CPU at toy sizes)" >&2; exit 2; fi
  DEV=cuda
  IG_ARGS="--arch densenet121 --image-size 224 --images 16"
  TRAIN_ARGS="--compile"
  PIPE_ARGS="--images 2560 --members 3"
  DISTILL_ARGS="--synthetic 1024"
  JPEG_ARGS="--images 1024 --device cuda"
  SCALE_ARGS="--sizes 2000 --workers 0,$(nproc) --stages cache,classify,labels,pretrain"
fi
echo "gpu.sh: $gpus GPU(s); work in $WORK" >&2

summarise() {  # the suite's JSON from the parts so far: written after every part, so that a suite
  # stopped from outside (a lent machine's time limit) still leaves what it measured
$PY - "$WORK" "$OUT" "$gpus" "$DRY" <<'PYEOF'
import json, shutil, subprocess, sys, time
from pathlib import Path
work, out, gpus, dry = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
smi = shutil.which("nvidia-smi")
suite = {"date": time.strftime("%Y-%m-%d %H:%M"), "gpus": gpus, "dry_run": dry,
         "gpu": subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True).stdout.strip().splitlines() if smi else []}
for part in ("ig_vs_captum", "train_throughput", "explain_pipeline", "distill_device", "jpeg_decode",
             "server_loaders", "ddp_2"):
    f = work / f"{part}.json"
    if f.exists():
        try:
            suite[part] = json.loads(f.read_text())
        except ValueError:
            suite[part] = {"failed": True, "output": f.read_text()[-2000:]}
util = [line.split(",") for line in (work / "util.csv").read_text().splitlines() if line.strip()] \
    if (work / "util.csv").exists() else []
if util:
    busy = [float(u[0]) for u in util]
    suite["explain_gpu_utilisation"] = {"samples": len(busy), "mean_pct": round(sum(busy) / len(busy), 1),
                                        "max_memory_mb": max(float(u[1]) for u in util)}

def bounds(throughput, loaders, gpus):
    """Per trained network: the GPUs' images/s (the best of train_throughput's variants, times
    the GPUs here) against what this server's cores load (scale.py's loader rate per core times
    the cores), and which of the two bounds training; gpus_fed: how many such GPUs the cores feed."""
    if not isinstance(throughput, list) or not isinstance(loaders, list) or not loaders:
        return None
    stages = loaders[-1].get("stages", {})
    out = {}
    for network, stage in (("classifier", "classify_loader"), ("pretrain", "pretrain_loader_w0")):
        gpu = [r["images_per_s"] for r in throughput if r.get("network") == network]
        if not gpu or stage not in stages:
            continue
        per_gpu, cores = max(gpu), loaders[-1]["server_cores"]
        load = stages[stage]["images_per_s_on_server"]
        out[network] = {"gpu_images_per_s": per_gpu, "gpus": max(gpus, 1), "loader_stage": stage,
                        "loader_images_per_s": load, "cores": cores, "gpus_fed": round(load / per_gpu, 2),
                        "bound": "loader" if load < per_gpu * max(gpus, 1) else "gpus"}
    measured = [r for r in loaders if str(r.get("stage", "")).startswith("pretrain_loader_w") and r.get("workers")]
    if measured and "pretrain" in out:  # the workers' real rate beside the per-core projection
        out["pretrain"]["loader_images_per_s_measured"] = max(r["images_per_s"] for r in measured)
        out["pretrain"]["workers_measured"] = max(r["workers"] for r in measured)
    return out


suite["bounds"] = bounds(suite.get("train_throughput"), suite.get("server_loaders"), gpus)
tmp = Path(out + ".tmp")  # replaced whole: a suite stopped while writing leaves the previous part's
tmp.write_text(json.dumps(suite, indent=1) + "\n")
tmp.replace(out)
PYEOF
}

BUDGET=${GPU_SUITE_BUDGET:-540}  # seconds for all the parts: the suite ends within 10 minutes
START=$(date +%s)
part() {  # part NAME TIMEOUT_S COMMAND...: stdout of COMMAND -> $WORK/NAME.json, or a failure record
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 15 ]; then
    echo "{\"skipped\": true, \"reason\": \"the suite's budget of $BUDGET s (GPU_SUITE_BUDGET) was spent\"}" > "$WORK/$name.json"
    echo "gpu.sh: $name skipped: the budget of $BUDGET s is spent" >&2
    summarise
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$(date +%s)
  if timeout "$limit" "$@" > "$WORK/$name.json" 2> "$WORK/$name.log"; then
    echo "gpu.sh: $name done in $(( $(date +%s) - t0 )) s" >&2
  else
    echo "{\"failed\": true, \"exit\": $?, \"log_tail\": $($PY -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[-2000:]))' "$WORK/$name.log")}" > "$WORK/$name.json"
    echo "gpu.sh: $name FAILED (see $WORK/$name.log)" >&2
  fi
  summarise
}

part ig_vs_captum 150 $PY benchmarks/explain_speed.py --device $DEV $IG_ARGS
part train_throughput 150 $PY benchmarks/train_throughput.py --device $DEV $TRAIN_ARGS
# what the GPUs would wait on, next to train_throughput's rates ("bounds"): before the long parts
part jpeg_decode 60 $PY benchmarks/jpeg_decode.py $JPEG_ARGS
part server_loaders 240 $PY benchmarks/scale.py $SCALE_ARGS \
  --server-cores "$(nproc)" --server-gpus "$(( gpus > 0 ? gpus : 1 ))" --out "$WORK/scale"
# explain end to end with nvidia-smi sampling the GPU's utilisation once a second
SMI=""
if [ "$DRY" = 0 ]; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$WORK/util.csv" 2>/dev/null &
  SMI=$!
fi
part explain_pipeline 240 $PY benchmarks/explain_pipeline.py --device $DEV $PIPE_ARGS --work "$WORK/pipe"
[ -n "$SMI" ] && kill $SMI 2>/dev/null
part distill_device 120 $PY benchmarks/distill_device.py $DISTILL_ARGS
if [ "$gpus" -ge 2 ]; then
  $PY -m doll_cli.main data phantom --out "$WORK/ddp_data" --n 2048 --size 224 --quiet >/dev/null 2>&1
  part ddp_2 150 bash -c "t0=\$(date +%s.%N); torchrun --nproc-per-node 2 -m doll_cli.main train-classifiers --root '$WORK/ddp_data' --out '$WORK/ddp_cls' --arch densenet121 --image-size 224 --members 1 --max-steps 100 --batch-size 32 --quiet >&2 && $PY -c \"import json,sys,time; print(json.dumps({'processes': 2, 'steps': 100, 'batch_per_process': 32, 'seconds': round(time.time() - float(sys.argv[1]), 1)}))\" \$t0"
fi
summarise
echo "gpu.sh: wrote $OUT" >&2

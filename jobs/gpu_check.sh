#!/usr/bin/env bash
# The GPU check in one prepared run: the CUDA tests, then `winnow bench` for
# ViT-B-32 and ViT-L-14, each table printed and its JSON written to $OUT.
#
# Made for the project's lent H100 machine (Python 3.12, its own torch and
# torchvision, no network). Prepare the wheels it lacks here first, pinned to
# the versions this checkout's .venv runs:
#
#   bash ../shared/gpu/prepare-wheels.sh $(.venv/bin/pip freeze | grep -iE \
#     '^(pydantic|pydantic[-_]core|annotated-types|typing-inspection|regex|pytest|pluggy|iniconfig)==')
#
# then run `bash jobs/gpu_check.sh` there with .whl/ carried along.
# PAIRS_B32 / PAIRS_L14 / IN_FLIGHT size the runs (the defaults are meant to fit
# one 600 s device call; not yet timed on the GPU).
set -uo pipefail
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" HF_HUB_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, torchvision, ray, open_clip; print("torch", torch.__version__,
  "torchvision", torchvision.__version__, "ray", ray.__version__, "open_clip",
  open_clip.__version__, "cuda", torch.cuda.is_available())'

echo "== CUDA tests"
timeout 300 python3 -m pytest -q -s -p no:cacheprovider \
  tests/images/test_tensor_path.py tests/scoring/test_in_flight.py 2>&1 | tail -15

bench() {  # name model pairs batch [extra args]: one table, its JSON kept as $OUT/bench-NAME.json
  local name=$1 model=$2 pairs=$3 batch=$4
  shift 4
  echo "== bench $name"
  rm -f "/tmp/bench-$model/bench.json"
  timeout 420 python3 -m jobs.benchmark --device cuda --model "$model" --pairs "$pairs" \
    --batch-size "$batch" --in-flight "${IN_FLIGHT:-2}" --output "/tmp/bench-$model" "$@" \
    2>"$OUT/bench-$name.log" | tail -20
  cp "/tmp/bench-$model/bench.json" "$OUT/bench-$name.json" 2>/dev/null \
    || { echo "bench $name failed:"; tail -30 "$OUT/bench-$name.log"; }
}
bench b32 ViT-B-32 "${PAIRS_B32:-65536}" 1024
# The same data again (not regenerated) with two actors sharing the GPU: two processes
# for the per-image decode and launch work that one process's GIL serialises.
bench b32-2actors ViT-B-32 "${PAIRS_B32:-65536}" 1024 --actors 2
bench l14 ViT-L-14 "${PAIRS_L14:-16384}" 512

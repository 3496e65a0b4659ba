#!/usr/bin/env bash
# The GPU check in one prepared run: the CUDA tests, then `winnow bench` for ViT-B-32
# (its job's actor sampled by py-spy), ViT-L-14 and ViT-B-32 on two actors, each
# table printed and its JSON written to $OUT.
#
# Made for the project's lent H100/H200 machine (Python 3.12, its own torch and
# torchvision, no network). Prepare the wheels it lacks here first, pinned to
# the versions this checkout's .venv runs:
#
#   bash ../shared/gpu/prepare-wheels.sh py-spy==0.4.3 $(.venv/bin/pip freeze | grep -iE \
#     '^(pydantic|pydantic[-_]core|annotated-types|typing-inspection|regex|psutil|pytest|pluggy|iniconfig)==')
#
# then run `bash jobs/gpu_check.sh` there with .whl/ carried along (py-spy is
# optional: without it the actor is not sampled). The steps run most telling
# first, each under its own timeout, and everything is logged under $OUT as it
# happens, so a run cut short still returns what it measured.
# PAIRS / IN_FLIGHT size the runs. On the H200 of 2026-11-28 the B/32 step took
# 225 s (data generation 73 s of it, now made during the tests); the steps' time limits
# add up to one 600 s call, and each step takes less when all goes well.
set -uo pipefail
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
# The repacked Ray wheel's programs (gcs_server, raylet) come out of --target without
# their executable bit, and Ray cannot start without them.
find /tmp/site/ray/core -type f -exec chmod +x {} +
# Installed with --no-compile: byte-compile once here, not in each of the job's processes.
python3 -m compileall -q -j 0 /tmp/site >/dev/null
export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" HF_HUB_OFFLINE=1 \
  PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 -c 'import torch, torchvision, ray, open_clip; print("torch", torch.__version__,
  "torchvision", torchvision.__version__, "ray", ray.__version__, "open_clip",
  open_clip.__version__, "cuda", torch.cuda.is_available())'
# GPU and memory-copy load each second, to read each step's bottleneck against.
nvidia-smi dmon -s uc -o T >"$OUT/dmon.txt" 2>&1 &

step() { echo "== $(date +%T) $*"; }

# Samples the first job actor (py-spy, 100 Hz, for 60 s from its start: start-up and
# the stream) into $OUT/actor-stacks.txt; its summary goes to the log after the step.
profile_actor() {
  command -v py-spy >/dev/null || { echo "no py-spy: the actor is not sampled"; return; }
  local pid=""
  until [ -n "$pid" ] || [ -e /tmp/bench-done ]; do
    pid=$(pgrep -f 'MapBatches\(ClipScorer' | head -1)
    sleep 0.5
  done
  [ -n "$pid" ] && py-spy record --pid "$pid" --duration 60 --rate 100 --nonblocking \
    --threads --function --format raw -o "$OUT/actor-stacks.txt" >"$OUT/py-spy.log" 2>&1
}

bench() {  # name model batch seconds [extra args]: its JSON kept as $OUT/bench-NAME.json
  local name=$1 model=$2 batch=$3 seconds=$4
  shift 4
  step "bench $name"
  rm -f /tmp/bench/bench.json
  echo "== bench $name" >>"$OUT/bench.log"
  # Every step reads the same generated shards (made once, by the first).
  timeout "$seconds" python3 -m jobs.benchmark --device cuda --model "$model" \
    --pairs "${PAIRS:-65536}" --batch-size "$batch" --in-flight "${IN_FLIGHT:-2}" \
    --output /tmp/bench "$@" 2>>"$OUT/bench.log" \
    || ray stop --force >/dev/null 2>&1  # a run cut short leaves its workers behind
  cp /tmp/bench/bench.json "$OUT/bench-$name.json" 2>/dev/null && return
  echo "bench $name failed:"
  tail -40 "$OUT/bench.log"
  return 1
}
tests() {  # seconds files...
  local seconds=$1
  shift
  step "CUDA tests $*"
  timeout "$seconds" python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -25
}

# The bench's shards (rendering them took 73 s of the first B/32 step on the H200)
# are made while the CUDA tests run; every bench step then reads them.
step "data, ${PAIRS:-65536} pairs, in the background"
python3 -c "from pathlib import Path; from pipeline.synth.web_pairs import WebPairsSpec, web_pairs
print('data:', web_pairs(Path('/tmp/bench/shards'), WebPairsSpec(pairs=${PAIRS:-65536})))" &
generator=$!
# The CUDA tests first: short, and a failure there explains a failing bench.
tests 90 -k "cuda or test_streams" tests/images/test_resize.py tests/images/test_tensor_path.py \
  tests/scoring/test_in_flight.py tests/scoring/test_streams.py tests/scoring/test_decode_parts.py
step "waiting for the data"
wait "$generator"
rm -f /tmp/bench-done
profile_actor &
profiler=$!
# The tensor path's code since 25b4878 first runs on a GPU here: if its job fails, the
# later steps run with PIL in the actor (the towers still on the GPU), so they still
# measure the rest of the job, and the log keeps the failure to fix.
decode=auto
bench b32 ViT-B-32 1024 200 || decode=pil
touch /tmp/bench-done  # a profiler still waiting for an actor stops
wait "$profiler"
[ -s "$OUT/actor-stacks.txt" ] && python3 -m jobs.stack_summary "$OUT/actor-stacks.txt" \
  || tail -5 "$OUT/py-spy.log" 2>/dev/null
# The same preprocess as B/32's: its decode rates and path comparison would repeat them.
bench l14 ViT-L-14 512 150 --skip-decode --decode "$decode"
if [ "$decode" = auto ]; then
  # Two actors sharing the GPU: two processes for the per-image host work that bounds
  # one actor (H200, 2026-11-28: 4,285 pairs/s streaming, the tensor path's own rate).
  bench b32-2actors ViT-B-32 1024 110 --actors 2 --skip-decode
else
  bench b32-pil ViT-B-32 1024 110 --skip-decode --decode pil
fi
step done

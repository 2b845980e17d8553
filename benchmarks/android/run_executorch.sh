#!/system/bin/sh
# Run ExecuTorch's executor_runner on the big cores with warm-up and timed executions, logging the context.
# Usage (on the device, from the folder holding the runner and the model):
#   sh run_executorch.sh MODEL.pte [ITERATIONS=50] [WARMUP=10] [THREADS=<number of big cores>]
# `mobileclip-deploy bench --target android --runner executor_runner` does the same from the host and parses it.
set -e
model=$1; iters=${2:-50}; warm=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
mask=$(sh "$here/bigcores.sh")
bits=$(printf '%d' "0x$mask"); big=0; while [ "$bits" -gt 0 ]; do big=$((big + (bits & 1))); bits=$((bits >> 1)); done
threads=${4:-$big}
echo "device: $(getprop ro.product.model) / $(getprop ro.soc.model) / Android $(getprop ro.build.version.release)"
echo "big-core mask: $mask, threads: $threads"
for z in /sys/class/thermal/thermal_zone*; do echo "thermal-before $(cat $z/type) $(cat $z/temp)"; done 2>/dev/null
LD_LIBRARY_PATH="$here" taskset "$mask" "$here/executor_runner" --model_path "$model" \
  --num_executions $((1 + warm + iters)) --cpu_threads "$threads" 2>&1
for z in /sys/class/thermal/thermal_zone*; do echo "thermal-after $(cat $z/type) $(cat $z/temp)"; done 2>/dev/null

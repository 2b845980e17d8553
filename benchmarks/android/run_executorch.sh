#!/system/bin/sh
# Run ExecuTorch's executor_runner on the big cores and print first-inference and warm latency, with context.
# Usage (on the device, from the folder holding the runner and the model):
#   sh run_executorch.sh MODEL.pte [ITERATIONS=50] [WARMUP=10] [THREADS=<number of big cores>]
# executor_runner prints only a total per run ("Model executed successfully N time(s) in T ms."), so this
# runs it three times (1, 1+WARMUP and 1+WARMUP+ITERATIONS executions) and takes the difference, exactly
# as `mobileclip-deploy bench --target android --runner executor_runner` does from the host.
set -e
model=$1; iters=${2:-50}; warm=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
mask=$(sh "$here/bigcores.sh")
bits=$(printf '%d' "0x$mask"); big=0; while [ "$bits" -gt 0 ]; do big=$((big + (bits & 1))); bits=$((bits >> 1)); done
threads=${4:-$big}
echo "device: $(getprop ro.product.model) / $(getprop ro.soc.model) / Android $(getprop ro.build.version.release)"
echo "big-core mask: $mask, threads: $threads"
for z in /sys/class/thermal/thermal_zone*; do echo "thermal-before $(cat $z/type) $(cat $z/temp)"; done 2>/dev/null
total() {  # total ms of one run with $1 executions
  LD_LIBRARY_PATH="$here" taskset "$mask" "$here/executor_runner" --model_path "$model" \
    --num_executions "$1" --cpu_threads "$threads" 2>&1 | sed -n 's/.*Model executed successfully [0-9]* time(s) in \([0-9.]*\) ms.*/\1/p'
}
first=$(total 1); base=$(total $((1 + warm))); timed=$(total $((1 + warm + iters)))
echo "first inference: $first ms"
awk -v a="$base" -v b="$timed" -v n="$iters" 'BEGIN { printf "warm mean over %d iterations: %.3f ms\n", n, (b - a) / n }'
for z in /sys/class/thermal/thermal_zone*; do echo "thermal-after $(cat $z/type) $(cat $z/temp)"; done 2>/dev/null

#!/system/bin/sh
# Run ONNX Runtime's onnxruntime_perf_test (CPU EP, generated inputs, percentiles printed) on the big cores.
# Usage (on the device): sh run_ort_perf_test.sh MODEL.onnx [ITERATIONS=200] [THREADS=<number of big cores>]
set -e
model=$1; iters=${2:-200}
here=$(cd "$(dirname "$0")" && pwd)
mask=$(sh "$here/bigcores.sh")
bits=$(printf '%d' "0x$mask"); big=0; while [ "$bits" -gt 0 ]; do big=$((big + (bits & 1))); bits=$((bits >> 1)); done
threads=${3:-$big}
echo "device: $(getprop ro.product.model) / $(getprop ro.soc.model) / Android $(getprop ro.build.version.release)"
echo "big-core mask: $mask, threads: $threads"
for z in /sys/class/thermal/thermal_zone*; do echo "thermal-before $(cat $z/type) $(cat $z/temp)"; done 2>/dev/null
LD_LIBRARY_PATH="$here" taskset "$mask" "$here/onnxruntime_perf_test" -e cpu -m times -r "$iters" \
  -x "$threads" -y 1 -s -I "$model" 2>&1
for z in /sys/class/thermal/thermal_zone*; do echo "thermal-after $(cat $z/type) $(cat $z/temp)"; done 2>/dev/null

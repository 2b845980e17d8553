#!/system/bin/sh
# Print the taskset mask (hex) of every core outside the slowest cluster, read from cpuinfo_max_freq.
# Same rule as mobileclip_deploy.bench.android.big_cores. Usage (on the device): sh bigcores.sh
min=""
for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do
  v=$(cat "$f"); if [ -z "$min" ] || [ "$v" -lt "$min" ]; then min=$v; fi
done
mask=0; all=0
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  n=${d##*/cpu}; v=$(cat "$d/cpufreq/cpuinfo_max_freq")
  all=$((all | (1 << n)))
  if [ "$v" -gt "$min" ]; then mask=$((mask | (1 << n))); fi
done
[ "$mask" -eq 0 ] && mask=$all
printf '%x\n' "$mask"

#!/usr/bin/env bash
# Used for the before/after tables in benches/README.md. Prints one line per run.
# Alternating A/B runs of `drover bench schedule --local`: ab.sh ROUNDS CLIENTS DURATION BIN...
rounds=$1; clients=$2; dur=$3; shift 3
for r in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    out=$("$bin" bench schedule --clients "$clients" --duration "$dur" --local --json 2>/dev/null)
    echo "$out" | python3 -c "
import json,sys
d=json.load(sys.stdin)
print('$r', '$(basename $bin)', 'clients=$clients', round(d['tasks_per_sec']), 'p50', d['p50_ms'], 'p99', d['p99_ms'], 'cpu_us_per_task', round(d['cpu_us_per_task'] or 0), 'load', open('/proc/loadavg').read().split()[0])
" 2>/dev/null || echo "$r $bin: $out" | head -c 600
  done
done

#!/usr/bin/env bash
# What recording costs: each CPython workload of bench/record/ run as a user runs it
# (`python3 SCRIPT`, CPython's own small-object allocator) and under `mallard record`
# (which sets PYTHONMALLOC=malloc, so every object is recorded), interleaved, ROUNDS rounds
# (default 5); prints the median wall time of each and the ratio. Also the recorded run
# without the CLI (the preloaded library alone), to tell the recorder's cost from the
# summary's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
cargo build --release -q
./scripts/build-trace >/dev/null
M=$PWD/target/release/mallard
LIB=$PWD/target/release/libmallard_trace.so
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN { print e - s }'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '| workload | plain | recorded (mallard record) | ratio | library alone | ratio | events |\n|---|--:|--:|--:|--:|--:|--:|\n'
for w in bench/record/*.py; do
  name=$(basename "$w" .py)
  : > "$out/plain"; : > "$out/rec"; : > "$out/lib"
  for _ in $(seq "$ROUNDS"); do
    secs python3 "$w" >> "$out/plain"
    rm -f "$out"/t.trace*
    secs "$M" record -o "$out/t.trace" -- python3 "$w" >> "$out/rec"
    rm -f "$out"/l.trace*
    secs env PYTHONMALLOC=malloc MALLARD_TRACE="$out/l.trace" LD_PRELOAD="$LIB" python3 "$w" >> "$out/lib"
  done
  events=$("$M" record -o "$out/t.trace" -- python3 "$w" 2>&1 >/dev/null | sed -n 's/.*(\([0-9]*\) events.*/\1/p' | head -1)
  p=$(median < "$out/plain"); r=$(median < "$out/rec"); l=$(median < "$out/lib")
  awk -v n="$name" -v p="$p" -v r="$r" -v l="$l" -v e="$events" \
    'BEGIN { printf "| %s | %.2f s | %.2f s | %.2f | %.2f s | %.2f | %s |\n", n, p, r, r / p, l, l / p, e }'
done

#!/usr/bin/env bash
# The fragmentation case (bench/c/frag.c) under each allocator, one process per run,
# interleaved, median of the runs: peak RSS (ru_maxrss) and RSS at the end, in MiB.
# Usage: bench/frag.sh [runs=5] [-- frag arguments]
# Allocators: glibc, mallard (target/release/libmallard.so), and Debian's jemalloc, mimalloc
# and tcmalloc when installed (apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"; shift || true
[ "${1:-}" = "--" ] && shift
cargo build --release --quiet -p mallard-capi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc -O2 -o "$out/frag" bench/c/frag.c

libdir=/usr/lib/x86_64-linux-gnu
declare -A lib=([glibc]="" [mallard]="$(realpath target/release/libmallard.so)")
order=(glibc mallard)
for a in jemalloc:libjemalloc.so.2 mimalloc:libmimalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4; do
  name="${a%%:*}"; file="$libdir/${a#*:}"
  if [ -e "$file" ]; then lib[$name]="$file"; order+=("$name"); fi
done

for ((r = 0; r < runs; r++)); do
  for a in "${order[@]}"; do
    env ${lib[$a]:+LD_PRELOAD="${lib[$a]}"} "$out/frag" "$@" >>"$out/$a"
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf '| allocator | peak RSS (MiB) | RSS at the end (MiB) |\n|---|--:|--:|\n'
for a in "${order[@]}"; do
  peak="$(awk '{ print $1 }' "$out/$a" | median)"
  end="$(awk '{ print $2 }' "$out/$a" | median)"
  awk -v a="$a" -v p="$peak" -v e="$end" 'BEGIN { printf "| %s | %.1f | %.1f |\n", a, p / 1024, e / 1024 }'
done

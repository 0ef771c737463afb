#!/usr/bin/env bash
# The Rust workloads of `mallard-workload` built for x86_64-unknown-linux-musl, the target of
# static Rust binaries, under musl's own malloc (`System`, what such a binary has by default)
# and under mallard, mimalloc and jemalloc as `#[global_allocator]` (the sibling binaries
# `mallard-workload-{mallard,mimalloc,jemalloc}`, so no allocator pays for a dispatch the
# others do not). One process per run, interleaved (every allocator on a workload, then the
# next workload, then the next round); the median of the rounds of the wall time (what the
# workload measured around itself, as `mallard bench --process` takes it) and of the peak RSS
# (`/usr/bin/time -f %M`: ru_maxrss). For context, also glibc's malloc and mallard on the gnu
# target (the same binaries `mallard bench --process` runs), unless --no-glibc.
# Usage: bench/musl.sh [rounds=5] [--smoke] [--no-glibc] [--only churn,json,...]
# Needs musl-gcc for mimalloc's and jemalloc's C code: apt-get install musl-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 smoke="" glibc=1 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=--smoke ;;
    --no-glibc) glibc="" ;;
    --only) only="${2:?--only needs a list of workloads}"; shift ;;
    [0-9]*) rounds="$1" ;;
    *) echo "usage: bench/musl.sh [rounds=5] [--smoke] [--no-glibc] [--only w1,w2]" >&2; exit 2 ;;
  esac
  shift
done
command -v musl-gcc >/dev/null || { echo "bench/musl.sh: needs musl-gcc (apt-get install musl-tools)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench/musl.sh: needs GNU time (apt-get install time)" >&2; exit 1; }

musl=x86_64-unknown-linux-musl
# cc-rs would look for x86_64-linux-musl-gcc; Debian's musl-tools names it musl-gcc.
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --quiet -p mallard-bench --bins --target "$musl"
dir="${CARGO_TARGET_DIR:-target}"
names=(musl mallard mimalloc jemalloc)
exes=("$dir/$musl/release/mallard-workload" "$dir/$musl/release/mallard-workload-mallard"
  "$dir/$musl/release/mallard-workload-mimalloc" "$dir/$musl/release/mallard-workload-jemalloc")
if [ -n "$glibc" ]; then
  cargo build --release --quiet -p mallard-bench --bins
  names+=(gnu:glibc gnu:mallard)
  exes+=("$dir/release/mallard-workload" "$dir/release/mallard-workload-mallard")
fi

# The workloads, from the binary's usage line, so the list cannot drift from the binary's.
all="$("${exes[0]}" 2>&1 | sed -n 's/.*(workloads: \(.*\))$/\1/p' | tr -d ' ')" || true
[ -n "$all" ] || { echo "bench/musl.sh: no workload list from ${exes[0]}" >&2; exit 1; }
workloads=()
for w in ${all//,/ }; do
  if [ -z "$only" ] || [[ ",$only," == *",$w,"* ]]; then workloads+=("$w"); fi
done
[ ${#workloads[@]} -gt 0 ] || { echo "bench/musl.sh: no workload matches --only $only (known: $all)" >&2; exit 2; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  for w in "${workloads[@]}"; do
    for i in "${!names[@]}"; do
      env -u LD_PRELOAD /usr/bin/time -o "$out/rss" -f %M "${exes[$i]}" "$w" $smoke >"$out/ms"
      echo "$w ${names[$i]} $(cat "$out/ms") $(cat "$out/rss")" >>"$out/samples"
      awk -v r="$r/$rounds" -v w="$w" -v a="${names[$i]}" -v ms="$(cat "$out/ms")" -v k="$(cat "$out/rss")" \
        'BEGIN { printf "round %s %-16s %-12s %9.1f ms %7.1f MiB\n", r, w, a, ms, k / 1024 }' >&2
    done
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

mode="median of $rounds round(s)"
[ -n "$smoke" ] && mode="smoke sizes, not a measurement"
printf 'bench/musl.sh — %s — %s (%s cores) — %s — %s, one process per run, interleaved (%s) — load %s before, %s after\n\n' \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" "$(nproc)" \
  "$(git rev-parse --short HEAD)" "$(rustc --version)" "$mode" "$load_before" "$load_after"
# Medians per (workload, allocator); ratio to musl's malloc in brackets; bold: the best of the
# musl columns (the gnu: columns are another libc, for context only).
for col in 3 4; do
  awk -v col="$col" -v names="${names[*]}" -v workloads="${workloads[*]}" '
    function median(key,   n, i, j, t, v) {
      n = split(s[key], v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    { s[$1 " " $2] = s[$1 " " $2] " " $col }
    END {
      na = split(names, a, " "); nw = split(workloads, ws, " ")
      title = col == 3 ? "wall time, ms (median)" : "peak RSS, MiB (median)"
      printf "%s, ratio to musl in brackets, best of the musl target in bold\n\n| workload |", title
      for (i = 1; i <= na; i++) printf " %s |", a[i]
      printf "\n|---|"; for (i = 1; i <= na; i++) printf "--:|"; printf "\n"
      for (k = 1; k <= nw; k++) {
        w = ws[k]; best = -1
        for (i = 1; i <= na; i++) {
          m[i] = median(w " " a[i]) / (col == 3 ? 1 : 1024)
          if (a[i] !~ /^gnu:/ && (best < 0 || m[i] < best)) best = m[i]
        }
        printf "| %s |", w
        for (i = 1; i <= na; i++) {
          cell = sprintf("%.1f (%.2f)", m[i], m[i] / m[1])
          if (a[i] !~ /^gnu:/ && m[i] == best) cell = "**" cell "**"
          printf " %s |", cell
          logsum[i] += log(m[i] / m[1])
        }
        printf "\n"
      }
      printf "| **geomean ratio to musl** |"
      for (i = 1; i <= na; i++) printf " %.2f |", exp(logsum[i] / nw)
      printf "\n\n"
    }' "$out/samples"
done

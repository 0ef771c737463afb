#!/usr/bin/env bash
# Instructions per alloc+dealloc pair of 32 B on the fast path, per allocator, under callgrind.
# Runs bench/examples/fastpath at 1M and 2M pairs and subtracts the totals, so start-up and
# warm-up cancel out: Ir/pair = (Ir(2M) - Ir(1M)) / 1M (includes ~3-5 instructions of loop).
# Usage: bench/callgrind-fastpath.sh [allocator...]   (default: noop system mallard mimalloc
# c-glibc c-mallard c-jemalloc c-mimalloc c-tcmalloc). The c-* entries run bench/c/fastpath.c,
# the same loop through the C ABI (malloc/free through the PLT), with the library preloaded:
# target/release/libmallard.so, target/release/libmallard_secure.so (c-mallard-secure, after
# scripts/build-secure), or Debian's libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4 (a
# missing one is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }

# Two builds: with `--example`, cargo builds only examples, even of the other packages named,
# so one command would leave libmallard.so missing or stale.
cargo build --release --quiet -p mallard-capi
cargo build --release --quiet -p mallard-bench --example fastpath
bin="${CARGO_TARGET_DIR:-target}/release/examples/fastpath"
lib="$(realpath -e "${CARGO_TARGET_DIR:-target}/release/libmallard.so")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc -O2 -o "$out/cfastpath" bench/c/fastpath.c

total_ir() { # the "totals:" (or older "summary:") line of a callgrind output file
  awk '/^(totals|summary):/ { print $2; exit }' "$1"
}

debian_lib() { # the first existing path of a Debian allocator library
  for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
    [ -e "$d/$1" ] && { echo "$d/$1"; return; }
  done
}

allocators=("$@")
[ ${#allocators[@]} -gt 0 ] || allocators=(noop system mallard mimalloc c-glibc c-mallard c-jemalloc c-mimalloc c-tcmalloc)
printf '%-10s %16s %16s %12s\n' allocator "Ir(1M)" "Ir(2M)" "Ir/pair"
for a in "${allocators[@]}"; do
  preload=
  case "$a" in
    c-mallard) preload="$lib" ;;
    c-mallard-secure) [ -e "${lib%.so}_secure.so" ] && preload="${lib%.so}_secure.so" ;;
    c-jemalloc) preload="$(debian_lib libjemalloc.so.2)" ;;
    c-mimalloc) preload="$(debian_lib libmimalloc.so.2)" ;;
    c-tcmalloc) preload="$(debian_lib libtcmalloc_minimal.so.4)" ;;
  esac
  case "$a" in
    c-glibc | c-mallard) ;;
    c-*) [ -n "$preload" ] || { printf '%-10s (not installed, skipped)\n' "$a"; continue; } ;;
  esac
  for n in 1000000 2000000; do
    # valgrind itself is static: LD_PRELOAD in its environment reaches only the program.
    case "$a" in
      c-*) run=("$out/cfastpath" "$n") ;;
      *) run=("$bin" "$a" "$n") ;;
    esac
    env ${preload:+LD_PRELOAD="$preload"} valgrind --tool=callgrind --callgrind-out-file="$out/$a.$n" "${run[@]}" \
      >"$out/$a.$n.log" 2>&1 || { cat "$out/$a.$n.log" >&2; exit 1; }
    # A library ld.so cannot preload is skipped with a warning: the count would be glibc's.
    if grep -q "cannot be preloaded" "$out/$a.$n.log"; then
      cat "$out/$a.$n.log" >&2
      exit 1
    fi
  done
  ir1="$(total_ir "$out/$a.1000000")"
  ir2="$(total_ir "$out/$a.2000000")"
  awk -v a="$a" -v x="$ir1" -v y="$ir2" \
    'BEGIN { printf "%-10s %16d %16d %12.2f\n", a, x, y, (y - x) / 1000000 }'
done

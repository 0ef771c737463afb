/* Shared by the misuse suite (the programs in tests/misuse). Each program does one thing a buggy or
 * hostile program does to its heap. Its first lines say what must happen, per allocator:
 *
 *   // outcome glibc: abort
 *   // outcome mallard: abort "double free"
 *   // outcome mallard-secure: abort "double free"
 *
 * Outcomes: `abort` (killed by SIGABRT), `abort "TEXT"` (SIGABRT and TEXT on stderr; for
 * mallard one line `mallard: ... at 0x...` that says TEXT), `segv` (killed by SIGSEGV, e.g. on
 * a guard page), `crash` (SIGABRT or SIGSEGV, depending on where ASLR put things), `exploited`
 * (exit 66: the program got a block at an address it chose, or two overlapping blocks),
 * `harmless` (exit 0: the misuse changed nothing the program could use).
 * crates/mallard-capi/tests/misuse_suite.rs runs them; SECURITY.md tabulates them. */
#ifndef MISUSE_H
#define MISUSE_H
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Using freed and foreign pointers is the point here. */
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"

#define EXPLOITED 66

/* Hides a pointer's origin from the compiler, so it cannot reason about the misuse. */
static inline void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* A target the attacker wants malloc to return: 64-aligned, so no alignment check refuses it
 * for its shape alone. */
static char target[256] __attribute__((aligned(64)));

/* Allocates up to `n` blocks of `size` and reports an exploitation if one of them is inside
 * `target`, or two of them overlap (the last `KEEP` are compared). */
static __attribute__((unused)) void hunt(size_t size, int n) {
    enum { KEEP = 64 };
    char *got[KEEP] = {0};
    for (int i = 0; i < n; i++) {
        char *p = launder(malloc(size));
        if (p == NULL) return;
        if (p >= target && p < target + sizeof target) {
            printf("malloc returned the chosen address %p\n", (void *)p);
            exit(EXPLOITED);
        }
        for (int j = 0; j < KEEP; j++) {
            if (got[j] && p < got[j] + size && got[j] < p + size) {
                printf("malloc returned %p, overlapping %p\n", (void *)p, (void *)got[j]);
                exit(EXPLOITED);
            }
        }
        got[i % KEEP] = p;
    }
}

/* Frees 1024 blocks of 4 KiB, enough to push every block freed before out of a quarantine
 * (mallard's secure build keeps a thread's last 64 small frees), so what follows meets the
 * allocator's free lists. */
static __attribute__((unused)) void flush_quarantine(void) {
    enum { N = 1024 };
    static void *p[N];
    for (int i = 0; i < N; i++) p[i] = malloc(4096);
    for (int i = 0; i < N; i++) free(p[i]);
}
#endif

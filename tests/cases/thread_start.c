/* Frees where an allocator must not start a thread, run under `thread_start_shim.c`.
 *
 * main builds 64 MiB of small and medium blocks and frees them all (a burst of frees that
 * gives pages and segments back: purging becomes due), then runs threads that allocate and
 * free small, chunk and huge blocks and exit, and joins each (glibc frees the stacks' TLS
 * inside pthread_join, with its stack-cache lock held). The shim aborts if a thread is
 * started inside any of those frees; the test also checks that mallard's purger was started
 * (from an allocation). Exit status 0, or 1 on an allocation failure or a corrupted block. */
#define _GNU_SOURCE
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define BURST (64u << 20)
#define THREADS 64

static void *worker(void *arg) {
    uint64_t rng = 0x9e37 + (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 64; i++) {
        uint64_t r = rng_next(&rng);
        size_t n = r % 8 == 0 ? (5u << 20) : r % 8 == 1 ? (200u << 10) : 16 + r % 2000;
        unsigned char *p = malloc(n);
        if (!p) return (void *)1;
        fill_pattern(p, n, r);
        if (check_pattern(p, n, r) != (size_t)-1) return (void *)1;
        free(p);
    }
    return NULL;
}

int main(void) {
    require_mallard_if_asked("thread_start");
    static void *blocks[BURST / 512];
    size_t n = 0, total = 0;
    uint64_t rng = 42;
    while (total < BURST) {
        size_t sz = 16 + rng_next(&rng) % 1000;
        if (!(blocks[n] = malloc(sz))) return 1;
        memset(blocks[n], 1, sz);
        n++;
        total += sz;
    }
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    for (int t = 0; t < THREADS; t++) {
        pthread_t th;
        void *ret = NULL;
        if (pthread_create(&th, NULL, worker, (void *)(uintptr_t)t) != 0) return 1;
        if (pthread_join(th, &ret) != 0 || ret != NULL) return 1;
    }
    printf("thread_start: ok\n");
    return 0;
}

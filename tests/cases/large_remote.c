/* Large blocks (mallard's chunk heap: 512 KiB to 4 MiB) freed by other threads while the
 * owner's empty chunk segments come due for purge, with a short purge delay.
 *
 * 1. A fixed sequence: the owner has two chunk segments, A (empty, its purge due) and B (in
 *    front of A in the owner's list) with a block freed by another thread; the segment cache
 *    is full. The owner's next large malloc collects B's remote free, which runs the purge,
 *    which gives A back to the OS; collecting must not go on to read A.
 * 2. Random: 4 threads allocate large blocks, fill them, and pass them to each other to check
 *    and free, with pauses longer than the purge delay.
 *
 * With glibc (no mallard_set_purge_delay_ms) the same runs without the short delay. */
#define _GNU_SOURCE
#include "common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SZ (1200u << 10) /* three of these fill a 4 MiB chunk segment */

static void (*set_purge_delay_ms)(uint64_t);
static void (*collect)(bool);

static void *free_it(void *p) {
    free(p);
    return NULL;
}

static unsigned char *block(size_t n, uint64_t seed) {
    unsigned char *p = malloc(n);
    if (!p) {
        fprintf(stderr, "large_remote: malloc(%zu) returned NULL\n", n);
        exit(1);
    }
    fill_pattern(p, n, seed);
    return p;
}

static void check(const unsigned char *p, size_t n, uint64_t seed, const char *where) {
    size_t off = check_pattern(p, n, seed);
    if (off != (size_t)-1) {
        fprintf(stderr, "large_remote: %s: %zu-byte block %p changed at byte %zu\n", where, n, (const void *)p, off);
        exit(1);
    }
}

static void fixed_sequence(int round) {
    void *first = block(100, 1); /* the thread's heap exists before its chunk segments */
    unsigned char *a[3], *b[3];
    for (int i = 0; i < 3; i++) a[i] = block(SZ, 10 + (uint64_t)i); /* chunk segment A */
    for (int i = 0; i < 3; i++) b[i] = block(SZ, 20 + (uint64_t)i); /* chunk segment B, listed before A */
    /* Fill the segment cache, so that a segment given back now is unmapped. */
    enum { N = 60 };
    unsigned char *fill[N];
    for (int i = 0; i < N; i++) fill[i] = block(SZ, 100 + (uint64_t)i);
    for (int i = 0; i < N; i++) free(fill[i]);
    if (collect) collect(true);
    for (int i = 0; i < 3; i++) free(a[i]); /* A is empty; its purge is due after the delay */
    pthread_t t;
    pthread_create(&t, NULL, free_it, b[0]); /* a remote free into B */
    pthread_join(t, NULL);
    usleep(60 * 1000);
    /* Collects B's remote free; that free runs the purge, which gives A back. */
    unsigned char *c = block(SZ, 99);
    check(c, SZ, 99, "fixed sequence");
    check(b[1], SZ, 21, "fixed sequence");
    check(b[2], SZ, 22, "fixed sequence");
    free(c);
    free(b[1]);
    free(b[2]);
    free(first);
    (void)round;
}

static void *fixed_thread(void *arg) {
    fixed_sequence((int)(intptr_t)arg);
    return NULL;
}

/* ---- random ---- */

#define WORKERS 4
#define BOX 16
static struct {
    unsigned char *p;
    size_t n;
    uint64_t seed;
} box[WORKERS][BOX];
static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;

static void *random_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t rng = mix64((uint64_t)id + 1) | 1;
    for (int i = 0; i < 120; i++) {
        size_t n = (520u << 10) + rng_next(&rng) % (3u << 20);
        uint64_t seed = rng_next(&rng);
        unsigned char *p = block(n, seed);
        int to = (id + 1 + (int)(rng_next(&rng) % (WORKERS - 1))) % WORKERS, slot = (int)(rng_next(&rng) % BOX);
        pthread_mutex_lock(&box_lock);
        unsigned char *old = box[to][slot].p;
        size_t on = box[to][slot].n;
        uint64_t os = box[to][slot].seed;
        box[to][slot].p = p;
        box[to][slot].n = n;
        box[to][slot].seed = seed;
        pthread_mutex_unlock(&box_lock);
        if (old) {
            check(old, on, os, "random");
            free(old);
        }
        if (i % 20 == 19) usleep(8000); /* longer than the purge delay */
    }
    return NULL;
}

int main(void) {
    require_mallard_if_asked("large_remote");
    double t0 = now_s();
    set_purge_delay_ms = (void (*)(uint64_t))dlsym(RTLD_DEFAULT, "mallard_set_purge_delay_ms");
    collect = (void (*)(bool))dlsym(RTLD_DEFAULT, "mallard_collect");
    if (set_purge_delay_ms) set_purge_delay_ms(20);
    /* In fresh threads, so each starts with a heap of its own. */
    for (int r = 0; r < 3; r++) {
        pthread_t t;
        pthread_create(&t, NULL, fixed_thread, (void *)(intptr_t)r);
        pthread_join(t, NULL);
    }
    fixed_sequence(3);
    if (set_purge_delay_ms) set_purge_delay_ms(2);
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) pthread_create(&th[i], NULL, random_worker, (void *)(intptr_t)i);
    for (int i = 0; i < WORKERS; i++) pthread_join(th[i], NULL);
    for (int w = 0; w < WORKERS; w++)
        for (int s = 0; s < BOX; s++)
            if (box[w][s].p) {
                check(box[w][s].p, box[w][s].n, box[w][s].seed, "end");
                free(box[w][s].p);
            }
    printf("large_remote: ok, %.2f s\n", now_s() - t0);
    return 0;
}

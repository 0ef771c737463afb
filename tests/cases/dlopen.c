/* libmallard.so dlopened (RTLD_NOW | RTLD_LOCAL) by a program that neither preloads nor links
 * it: `dlopen PATH_TO_LIBMALLARD`. The program's own malloc stays glibc's; the library's
 * malloc, calloc, realloc, free and mallard_usable_size, found with dlsym, are used from
 * several threads, two of them started before the dlopen (mallard's initial-exec TLS must be
 * set up for threads that already exist). Blocks go from thread to thread and are freed by
 * another thread than the one that allocated them; glibc's malloc is used in between. */
#define _GNU_SOURCE
#include "common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define THREADS_BEFORE 2
#define THREADS_AFTER 3
#define SLOTS 64
#define ITERATIONS 2000

static void *(*m_malloc)(size_t);
static void *(*m_calloc)(size_t, size_t);
static void *(*m_realloc)(void *, size_t);
static void (*m_free)(void *);
static size_t (*m_usable_size)(const void *);
static atomic_bool ready;

struct header {
    size_t size;
    uint64_t seed;
};

static _Atomic(unsigned char *) slots[SLOTS];
static atomic_long cross_frees;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    _exit(1);
}

static void check(const unsigned char *p, const char *where) {
    struct header h;
    memcpy(&h, p, sizeof h);
    size_t off = check_pattern(p + sizeof h, h.size - sizeof h, h.seed);
    if (off != (size_t)-1)
        die("dlopen: %s: block %p of %zu bytes changed at byte %zu\n", where, (const void *)p, h.size, off + sizeof h);
    size_t u = m_usable_size(p);
    if (u < h.size) die("dlopen: mallard_usable_size(%p) = %zu < %zu\n", (const void *)p, u, h.size);
}

static size_t pick(uint64_t *rng) {
    uint64_t r = rng_next(rng) % 1000;
    if (r < 850) return sizeof(struct header) + rng_next(rng) % 1000;
    if (r < 985) return 1000 + rng_next(rng) % (64 << 10);
    if (r < 997) return (600 << 10) + rng_next(rng) % (2 << 20);
    return (5 << 20) + rng_next(rng) % (2 << 20);
}

static void *work(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = mix64(id) | 1;
    /* Threads started before the dlopen use glibc only, until the library is there. */
    while (!atomic_load(&ready)) {
        void *g = malloc(64);
        memset(g, 1, 64);
        free(g);
        usleep(500);
    }
    for (int i = 0; i < ITERATIONS; i++) {
        size_t n = pick(&rng);
        uint64_t seed = rng_next(&rng);
        unsigned char *p = (i % 7 == 0) ? m_calloc(1, n) : m_malloc(n);
        if (!p) die("dlopen: mallard malloc(%zu) returned NULL\n", n);
        if (((uintptr_t)p & 15) != 0) die("dlopen: mallard malloc(%zu) = %p is not 16-aligned\n", n, (void *)p);
        if (i % 7 == 0)
            for (size_t k = 0; k < n; k += 97)
                if (p[k]) die("dlopen: mallard calloc(1, %zu): byte %zu is %d\n", n, k, p[k]);
        struct header h = {n, seed};
        memcpy(p, &h, sizeof h);
        fill_pattern(p + sizeof h, n - sizeof h, seed);
        if (i % 5 == 0) {
            size_t m = pick(&rng);
            unsigned char *q = m_realloc(p, m);
            if (!q) die("dlopen: mallard realloc(%zu -> %zu) returned NULL\n", n, m);
            size_t keep = m < n ? m : n;
            if (keep > sizeof h) {
                size_t off = check_pattern(q + sizeof h, keep - sizeof h, seed);
                if (off != (size_t)-1) die("dlopen: realloc %zu -> %zu lost byte %zu\n", n, m, off + sizeof h);
            }
            h.size = m;
            memcpy(q, &h, sizeof h);
            fill_pattern(q + sizeof h, m - sizeof h, seed);
            p = q;
        }
        /* glibc's malloc in between: the two allocators live side by side. */
        char *g = malloc(32 + (size_t)i % 200);
        if (!g) die("dlopen: glibc malloc failed\n");
        memset(g, 2, 32);
        /* Pass the block on; free what was there (most likely another thread's block). */
        unsigned char *old = atomic_exchange(&slots[rng_next(&rng) % SLOTS], p);
        if (old) {
            check(old, "before a cross-thread free");
            m_free(old);
            atomic_fetch_add(&cross_frees, 1);
        }
        free(g);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen /path/to/libmallard.so\n");
        return 2;
    }
    double t0 = now_s();
    pthread_t th[THREADS_BEFORE + THREADS_AFTER];
    for (uintptr_t i = 0; i < THREADS_BEFORE; i++) pthread_create(&th[i], NULL, work, (void *)(i + 1));
    usleep(20000);

    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) die("dlopen: dlopen(%s) failed: %s\n", argv[1], dlerror());
    m_malloc = (void *(*)(size_t))dlsym(h, "malloc");
    m_calloc = (void *(*)(size_t, size_t))dlsym(h, "calloc");
    m_realloc = (void *(*)(void *, size_t))dlsym(h, "realloc");
    m_free = (void (*)(void *))dlsym(h, "free");
    m_usable_size = (size_t(*)(const void *))dlsym(h, "mallard_usable_size");
    if (!m_malloc || !m_calloc || !m_realloc || !m_free || !m_usable_size)
        die("dlopen: dlsym did not find malloc, calloc, realloc, free and mallard_usable_size: %s\n", dlerror());
    if ((void *)m_malloc == dlsym(RTLD_DEFAULT, "malloc"))
        die("dlopen: the program's malloc became mallard's although the library was loaded RTLD_LOCAL\n");
    if (dlsym(RTLD_DEFAULT, "mallard_usable_size"))
        die("dlopen: mallard_usable_size is visible globally although the library was loaded RTLD_LOCAL\n");
    atomic_store(&ready, true);

    for (uintptr_t i = THREADS_BEFORE; i < THREADS_BEFORE + THREADS_AFTER; i++)
        pthread_create(&th[i], NULL, work, (void *)(i + 1));
    /* The main thread works too. */
    work((void *)100);
    for (int i = 0; i < THREADS_BEFORE + THREADS_AFTER; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < SLOTS; i++) {
        unsigned char *p = atomic_exchange(&slots[i], NULL);
        if (p) {
            check(p, "at the end");
            m_free(p);
        }
    }
    /* A thread that starts after everything and only allocates and frees. */
    pthread_t late;
    pthread_create(&late, NULL, work, (void *)200);
    pthread_join(late, NULL);
    for (int i = 0; i < SLOTS; i++) m_free(atomic_exchange(&slots[i], NULL));
    if (dlclose(h) != 0) die("dlopen: dlclose failed: %s\n", dlerror());
    printf("dlopen: %d threads, %ld cross-thread frees, %.2f s\n", THREADS_BEFORE + THREADS_AFTER + 2,
           atomic_load(&cross_frees), now_s() - t0);
    return 0;
}

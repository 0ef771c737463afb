/* Multi-threaded integrity stress for libmallard.so.
 *
 * 8 threads run at a time; each allocates blocks of random sizes (8 B to 256 KiB, a few up to
 * 4 MiB), fills each with a pattern derived from (thread, index, address), and hands a large
 * share of them to other threads through mutex-protected mailboxes. Whoever takes a block
 * checks every byte before freeing it (cross-thread frees) or reallocs it (checking the kept
 * bytes) and passes it on again. Threads exit after a fixed number of operations and new ones
 * start (72 threads over the run), so blocks outlive the threads that allocated them. At the
 * end every block allocated was freed exactly once, with the same byte totals, and (with
 * mallard) its statistics show nothing live once the pending remote frees are collected.
 *
 * `threads [THREADS_TOTAL [OPS_PER_THREAD]]`. Any mismatch stops the program with the exact
 * block, byte, expected and found value, and exit code 1. */
#define _GNU_SOURCE
#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CONCURRENT 8
#define SLOTS 128
#define QUEUE_CAP 8192

struct item {
    unsigned char *p;
    size_t size;
    uint32_t thread; /* the thread that wrote the current contents */
    uint32_t index;  /* its counter of blocks written */
    uint32_t owner;  /* the thread that got p from malloc or realloc */
};

/* One mailbox per thread slot: blocks are pushed to another slot's mailbox and taken by
 * whichever thread runs in that slot, now or later. */
static struct mailbox {
    pthread_mutex_t lock;
    struct item ring[QUEUE_CAP];
    size_t head, len;
} box[CONCURRENT];

static atomic_long allocs, frees, reallocs, passed, alloc_bytes, free_bytes, remote_frees;
static long ops_per_thread = 2500;

static uint64_t seed_of(const struct item *it) {
    return mix64(((uint64_t)it->thread << 32 | it->index) ^ mix64((uintptr_t)it->p));
}

__attribute__((noreturn)) static void die(const char *what, unsigned self, const struct item *it, size_t off) {
    uint64_t seed = seed_of(it);
    fprintf(stderr,
            "threads: MISMATCH %s in thread %u: block %u of thread %u, %zu bytes at %p: byte %zu is %#x, "
            "expected %#x\n",
            what, self, it->index, it->thread, it->size, (void *)it->p, off, it->p[off], pattern_byte(seed, off));
    _exit(1);
}

static void verify(const char *what, unsigned self, const struct item *it, size_t n) {
    size_t off = check_pattern(it->p, n, seed_of(it));
    if (off != (size_t)-1) die(what, self, it, off);
}

struct worker {
    unsigned id, slot_no;
    uint64_t rng;
    uint32_t written;
    struct item slot[SLOTS];
};

static size_t random_size(uint64_t *rng) {
    uint64_t r = rng_next(rng) % 1000;
    unsigned e;
    if (r < 900) e = 3 + (unsigned)(rng_next(rng) % 10);        /* 8 B .. 8 KiB */
    else if (r < 996) e = 12 + (unsigned)(rng_next(rng) % 6);   /* 4 KiB .. 256 KiB */
    else e = 18 + (unsigned)(rng_next(rng) % 4);                /* 256 KiB .. 4 MiB */
    size_t lo = (size_t)1 << e;
    size_t n = lo + rng_next(rng) % lo;
    if (n > ((size_t)4 << 20)) n = (size_t)4 << 20;
    return n < 8 ? 8 : n;
}

/* (Re)writes block it->p with this thread's pattern for it. */
static void stamp(struct worker *w, struct item *it) {
    it->thread = w->id;
    it->index = w->written++;
    fill_pattern(it->p, it->size, seed_of(it));
}

static void check_block(struct worker *w, struct item *it) {
    if (((uintptr_t)it->p & 15) != 0) {
        fprintf(stderr, "threads: block %p of %zu bytes is not 16-aligned\n", (void *)it->p, it->size);
        _exit(1);
    }
    size_t u = malloc_usable_size(it->p);
    if (u < it->size) {
        fprintf(stderr, "threads: thread %u: malloc_usable_size(%p) = %zu < %zu\n", w->id, (void *)it->p, u, it->size);
        _exit(1);
    }
}

static void new_block(struct worker *w, struct item *it) {
    it->size = random_size(&w->rng);
    it->p = malloc(it->size);
    if (!it->p) {
        fprintf(stderr, "threads: malloc(%zu) returned NULL\n", it->size);
        _exit(1);
    }
    it->owner = w->id;
    check_block(w, it);
    atomic_fetch_add(&allocs, 1);
    atomic_fetch_add(&alloc_bytes, (long)it->size);
    stamp(w, it);
}

static void release(struct worker *w, struct item *it) {
    verify("before free", w->id, it, it->size);
    if (it->owner != w->id) atomic_fetch_add(&remote_frees, 1);
    atomic_fetch_add(&frees, 1);
    atomic_fetch_add(&free_bytes, (long)it->size);
    free(it->p);
    it->p = NULL;
}

static void resize(struct worker *w, struct item *it) {
    verify("before realloc", w->id, it, it->size);
    size_t n = random_size(&w->rng);
    unsigned char *q = realloc(it->p, n);
    if (!q) {
        fprintf(stderr, "threads: realloc(%p, %zu) returned NULL\n", (void *)it->p, n);
        _exit(1);
    }
    /* The kept bytes still carry the old pattern, which was derived from the old address. */
    size_t keep = n < it->size ? n : it->size;
    unsigned char *old = it->p;
    size_t off = check_pattern(q, keep, seed_of(it));
    if (off != (size_t)-1) {
        fprintf(stderr,
                "threads: MISMATCH after realloc in thread %u: block %u of thread %u moved from %p (%zu bytes) to %p "
                "(%zu bytes): byte %zu is %#x, expected %#x\n",
                w->id, it->index, it->thread, (void *)old, it->size, (void *)q, n, off, q[off],
                pattern_byte(seed_of(it), off));
        _exit(1);
    }
    atomic_fetch_add(&reallocs, 1);
    atomic_fetch_add(&free_bytes, (long)it->size);
    atomic_fetch_add(&alloc_bytes, (long)n);
    if (it->owner != w->id) atomic_fetch_add(&remote_frees, 1);
    it->p = q;
    it->size = n;
    it->owner = w->id;
    check_block(w, it);
    stamp(w, it);
}

/* Passes `it` to another thread slot's mailbox; false (and `it` kept) when it is full. */
static bool push(struct worker *w, struct item *it) {
    struct mailbox *b = &box[(w->slot_no + 1 + rng_next(&w->rng) % (CONCURRENT - 1)) % CONCURRENT];
    bool ok = false;
    pthread_mutex_lock(&b->lock);
    if (b->len < QUEUE_CAP) {
        b->ring[(b->head + b->len) % QUEUE_CAP] = *it;
        b->len++;
        ok = true;
    }
    pthread_mutex_unlock(&b->lock);
    if (ok) {
        atomic_fetch_add(&passed, 1);
        it->p = NULL;
    }
    return ok;
}

static size_t pop(struct mailbox *b, struct item *out, size_t max) {
    size_t n = 0;
    pthread_mutex_lock(&b->lock);
    while (n < max && b->len > 0) {
        out[n++] = b->ring[b->head];
        b->head = (b->head + 1) % QUEUE_CAP;
        b->len--;
    }
    pthread_mutex_unlock(&b->lock);
    return n;
}

/* A block leaving a slot: passed on (mostly), freed here, or resized and kept. */
static void retire(struct worker *w, struct item *it) {
    uint64_t r = rng_next(&w->rng) % 100;
    if (r < 60) {
        if (!push(w, it)) release(w, it);
    } else if (r < 85) {
        release(w, it);
    } else {
        resize(w, it);
        if (!push(w, it)) release(w, it);
    }
}

/* Slots whose thread has finished, for main to join and reuse. */
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static bool done[CONCURRENT];

static void *work(void *arg) {
    struct worker *w = arg;
    struct item got[8];
    for (long op = 0; op < ops_per_thread; op++) {
        uint64_t r = rng_next(&w->rng) % 100;
        if (r < 50) {
            struct item *it = &w->slot[rng_next(&w->rng) % SLOTS];
            if (it->p) retire(w, it);
            new_block(w, it);
        } else if (r < 85) {
            size_t n = pop(&box[w->slot_no], got, 1 + rng_next(&w->rng) % 8);
            for (size_t i = 0; i < n; i++) {
                uint64_t what = rng_next(&w->rng) % 100;
                if (what < 70) {
                    release(w, &got[i]);
                    continue;
                }
                resize(w, &got[i]);
                struct item *it = &w->slot[rng_next(&w->rng) % SLOTS];
                if (what < 85 && !it->p) *it = got[i];
                else if (!push(w, &got[i])) release(w, &got[i]);
            }
        } else {
            struct item *it = &w->slot[rng_next(&w->rng) % SLOTS];
            if (it->p) verify("on a re-check", w->id, it, it->size);
        }
    }
    /* Leave half of what is left to the threads that come after this one. */
    for (int i = 0; i < SLOTS; i++) {
        if (!w->slot[i].p) continue;
        if (i % 2 == 0 && push(w, &w->slot[i])) continue;
        release(w, &w->slot[i]);
    }
    pthread_mutex_lock(&done_lock);
    done[w->slot_no] = true;
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

int main(int argc, char **argv) {
    require_mallard_if_asked("threads");
    long total = argc > 1 ? atol(argv[1]) : 72;
    if (argc > 2) ops_per_thread = atol(argv[2]);
    if (total < CONCURRENT) total = CONCURRENT;
    double t0 = now_s();
    for (int s = 0; s < CONCURRENT; s++) pthread_mutex_init(&box[s].lock, NULL);
    static struct worker workers[CONCURRENT];
    pthread_t th[CONCURRENT];
    /* 8 slots; when the thread of a slot finishes, a new one starts in it while the others
     * keep running. */
    for (long t = 0; t < total; t++) {
        int s = (int)t;
        if (t >= CONCURRENT) {
            pthread_mutex_lock(&done_lock);
            for (;;) {
                for (s = 0; s < CONCURRENT && !done[s]; s++) {}
                if (s < CONCURRENT) break;
                pthread_cond_wait(&done_cond, &done_lock);
            }
            done[s] = false;
            pthread_mutex_unlock(&done_lock);
            pthread_join(th[s], NULL);
        }
        struct worker *w = &workers[s];
        memset(w, 0, sizeof *w);
        w->id = (unsigned)t + 1;
        w->slot_no = (unsigned)s;
        w->rng = mix64((uint64_t)t + 1) | 1;
        int e = pthread_create(&th[s], NULL, work, w);
        if (e) {
            fprintf(stderr, "threads: pthread_create: %s\n", strerror(e));
            return 1;
        }
    }
    for (int s = 0; s < CONCURRENT; s++) pthread_join(th[s], NULL);

    /* What the last threads left in the mailboxes, the main thread checks and frees. */
    struct worker main_worker = {.id = 0, .rng = 1};
    struct item got[64];
    size_t n;
    for (int s = 0; s < CONCURRENT; s++)
        while ((n = pop(&box[s], got, 64)) > 0)
            for (size_t i = 0; i < n; i++) release(&main_worker, &got[i]);

    long a = atomic_load(&allocs), f = atomic_load(&frees);
    long ab = atomic_load(&alloc_bytes), fb = atomic_load(&free_bytes);
    printf("threads: %ld threads, %ld allocations, %ld frees, %ld reallocs, %ld passed between threads, %ld blocks "
           "freed or reallocated by another thread, %.2f s\n",
           total, a, f, atomic_load(&reallocs), atomic_load(&passed), atomic_load(&remote_frees), now_s() - t0);
    if (a != f || ab != fb) {
        printf("threads: FAIL: %ld blocks allocated but %ld freed; %ld bytes allocated but %ld freed\n", a, f, ab, fb);
        return 1;
    }
    if (atomic_load(&remote_frees) < a / 4) {
        printf("threads: FAIL: only %ld of %ld blocks were freed by another thread\n", atomic_load(&remote_frees), a);
        return 1;
    }
    /* mallard: with every block freed and the pending remote frees collected, nothing is live. */
    void (*stats)(int64_t *) = (void (*)(int64_t *))dlsym(RTLD_DEFAULT, "mallard_stats");
    void (*collect)(bool) = (void (*)(bool))dlsym(RTLD_DEFAULT, "mallard_collect");
    if (stats && collect) {
        int64_t s[13]; /* struct mallard_stats: live_bytes first, huge_blocks [4], large_blocks [6] */
        collect(true);
        stats(s);
        if (s[0] > (1 << 20) || s[4] != 0 || s[6] != 0) {
            printf("threads: FAIL: after every block was freed and mallard_collect(true), mallard_stats says "
                   "live_bytes %lld, huge_blocks %lld, large_blocks %lld\n",
                   (long long)s[0], (long long)s[4], (long long)s[6]);
            return 1;
        }
        printf("threads: mallard live bytes after the run: %lld\n", (long long)s[0]);
    }
    puts("threads: ok");
    return 0;
}

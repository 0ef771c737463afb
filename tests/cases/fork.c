/* fork() from a busy multi-threaded parent, with libmallard.so.
 *
 * 4 threads allocate, fill, check and free blocks (small, large, huge) in a loop and publish
 * some of them in shared slots. While they run, the main thread forks 50 times. Each child
 * (which has only the forking thread) checks and frees the blocks the parent's threads had
 * published (blocks of heaps whose threads do not exist in the child), mallocs, reallocs and
 * frees blocks of every size range checking their contents, and _exits 0. Every 5th child
 * also runs threads of its own, every 10th forks a grandchild. A child arms alarm(), so a
 * deadlock in the allocator becomes a SIGALRM death, which the parent reports. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 4
#define SHARED 64
#define FORKS 50
#define CHILD_ALARM_S 20

/* A published block starts with its size and seed; the pattern follows. */
struct header {
    size_t size;
    uint64_t seed;
};

static _Atomic(unsigned char *) shared[SHARED];
static atomic_bool stop;
static atomic_long worker_ops;

/* Reports from a child: write(2) only (no stdio buffers shared with the parent). */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
    ssize_t r = write(2, buf, (size_t)n);
    (void)r;
}

static size_t pick_size(uint64_t *rng) {
    uint64_t r = rng_next(rng) % 100;
    if (r < 90) return sizeof(struct header) + rng_next(rng) % 2000;
    if (r < 98) return 2000 + rng_next(rng) % (100 << 10);
    if (r < 99) return (600 << 10) + rng_next(rng) % (3 << 20);
    return (5 << 20) + rng_next(rng) % (1 << 20);
}

static unsigned char *make_block(size_t n, uint64_t seed) {
    unsigned char *p = malloc(n);
    if (!p) return NULL;
    struct header h = {n, seed};
    memcpy(p, &h, sizeof h);
    fill_pattern(p + sizeof h, n - sizeof h, seed);
    return p;
}

/* Checks a published block; returns the offset of a bad byte or -1. */
static size_t check_block(const unsigned char *p, size_t *size) {
    struct header h;
    memcpy(&h, p, sizeof h);
    *size = h.size;
    if (h.size < sizeof h || h.size > (64u << 20)) return 0;
    size_t off = check_pattern(p + sizeof h, h.size - sizeof h, h.seed);
    return off == (size_t)-1 ? off : off + sizeof h;
}

static void *worker(void *arg) {
    uint64_t rng = mix64((uintptr_t)arg) | 1;
    /* Busy, but at the lowest priority: on a small machine the children and the forking thread
     * would otherwise wait for a CPU most of the time. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    unsigned char *local[32] = {0};
    size_t local_size[32] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t n = pick_size(&rng);
        uint64_t seed = rng_next(&rng);
        unsigned char *p = make_block(n, seed);
        if (!p) {
            fprintf(stderr, "fork: worker: malloc(%zu) returned NULL\n", n);
            exit(1);
        }
        unsigned i = (unsigned)(rng_next(&rng) % 32);
        if (rng_next(&rng) % 2) {
            p = atomic_exchange(&shared[rng_next(&rng) % SHARED], p);
            if (!p) continue;
            n = 0;
        } else {
            unsigned char *old = local[i];
            local[i] = p;
            local_size[i] = n;
            p = old;
        }
        if (p) {
            size_t size, off = check_block(p, &size);
            if (off != (size_t)-1) {
                fprintf(stderr, "fork: worker: block %p of %zu bytes changed at byte %zu\n", (void *)p, size, off);
                exit(1);
            }
            if (rng_next(&rng) % 4 == 0) {
                unsigned char *q = realloc(p, size + 100);
                if (!q || check_block(q, &size) != (size_t)-1) {
                    fprintf(stderr, "fork: worker: realloc of a %zu-byte block lost its contents\n", size);
                    exit(1);
                }
                p = q;
            }
            free(p);
        }
        atomic_fetch_add_explicit(&worker_ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < 32; i++) free(local[i]);
    (void)local_size;
    return NULL;
}

/* ---- what a child does ---- */

/* Allocates, fills, reallocs through the size ranges and frees; 0 on success. */
static int churn(uint64_t seed, const char *who) {
    static const size_t sizes[] = {1, 24, 200, 3000, 40000, 300 << 10, 1 << 20, 5 << 20};
    enum { N = sizeof sizes / sizeof *sizes };
    unsigned char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(sizes[i]);
        if (!b[i]) {
            say("fork: %s: malloc(%zu) returned NULL\n", who, sizes[i]);
            return 1;
        }
        fill_pattern(b[i], sizes[i], seed + (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        size_t n = sizes[i], m = sizes[(i + 3) % N];
        unsigned char *q = realloc(b[i], m);
        if (!q) {
            say("fork: %s: realloc(%zu -> %zu) returned NULL\n", who, n, m);
            return 1;
        }
        size_t off = check_pattern(q, n < m ? n : m, seed + (uint64_t)i);
        if (off != (size_t)-1) {
            say("fork: %s: realloc(%zu -> %zu) lost byte %zu\n", who, n, m, off);
            return 1;
        }
        free(q);
    }
    /* Many small blocks at once. */
    enum { M = 500 };
    static __thread unsigned char *s[M];
    for (int i = 0; i < M; i++) {
        s[i] = malloc(16 + (size_t)i % 300);
        if (!s[i]) return 1;
        fill_pattern(s[i], 16 + (size_t)i % 300, seed ^ (uint64_t)i);
    }
    for (int i = 0; i < M; i++) {
        size_t off = check_pattern(s[i], 16 + (size_t)i % 300, seed ^ (uint64_t)i);
        if (off != (size_t)-1) {
            say("fork: %s: small block %d changed at byte %zu\n", who, i, off);
            return 1;
        }
        free(s[i]);
    }
    return 0;
}

static _Atomic(unsigned char *) child_box[8];

static void *child_thread(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    if (churn(id * 1000, "child thread")) return (void *)1;
    /* Cross-thread frees inside the child too. */
    for (int i = 0; i < 200; i++) {
        unsigned char *p = make_block(64 + (size_t)i * 10, id * 7 + (uint64_t)i);
        if (!p) return (void *)1;
        p = atomic_exchange(&child_box[(id + (uintptr_t)i) % 8], p);
        if (p) {
            size_t size;
            if (check_block(p, &size) != (size_t)-1) {
                say("fork: child thread: a block from another child thread changed\n");
                return (void *)1;
            }
            free(p);
        }
    }
    return NULL;
}

static int child(int n) {
    alarm(CHILD_ALARM_S);
    /* The blocks the parent's threads had published when it forked. */
    int taken = 0;
    for (int i = 0; i < SHARED; i++) {
        unsigned char *p = atomic_exchange(&shared[i], NULL);
        if (!p) continue;
        size_t size, off = check_block(p, &size);
        if (off != (size_t)-1) {
            say("fork: child %d: inherited block %p of %zu bytes changed at byte %zu\n", n, (void *)p, size, off);
            return 1;
        }
        if (i % 3 == 0 && size < (1 << 20)) {
            p = realloc(p, size * 2);
            if (!p || check_block(p, &size) != (size_t)-1) {
                say("fork: child %d: realloc of an inherited block lost its contents\n", n);
                return 1;
            }
        }
        free(p);
        taken++;
    }
    if (churn((uint64_t)n, "child")) return 1;
    if (n % 5 == 0) {
        pthread_t t[4];
        for (uintptr_t i = 0; i < 4; i++)
            if (pthread_create(&t[i], NULL, child_thread, (void *)(i + 1))) {
                say("fork: child %d: pthread_create failed\n", n);
                return 1;
            }
        for (int i = 0; i < 4; i++) {
            void *r;
            pthread_join(t[i], &r);
            if (r) return 1;
        }
        for (int i = 0; i < 8; i++) free(atomic_exchange(&child_box[i], NULL));
    }
    if (n % 10 == 0) {
        pid_t g = fork();
        if (g < 0) return 1;
        if (g == 0) _exit(churn(99, "grandchild"));
        int st;
        if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            say("fork: child %d: grandchild failed (status %#x)\n", n, st);
            return 1;
        }
    }
    (void)taken;
    return 0;
}

int main(void) {
    require_mallard_if_asked("fork");
    double t0 = now_s();
    pthread_t th[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++) pthread_create(&th[i], NULL, worker, (void *)(i + 1));
    /* Let the workers fill the shared slots. */
    while (atomic_load(&worker_ops) < 2000) usleep(1000);
    int failures = 0;
    for (int n = 1; n <= FORKS; n++) {
        /* Some allocation in the forking thread too, so its heap is busy as well. */
        void *mine = malloc((size_t)n * 1000);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) _exit(child(n));
        free(mine);
        int st;
        pid_t w;
        while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {}
        if (w != pid) {
            perror("waitpid");
            return 1;
        }
        if (WIFSIGNALED(st)) {
            int sig = WTERMSIG(st);
            printf("fork: FAIL child %d killed by signal %d (%s)%s\n", n, sig, strsignal(sig),
                   sig == SIGALRM ? ": it hung (deadlock in the allocator after fork?)" : "");
            failures++;
        } else if (WEXITSTATUS(st) != 0) {
            printf("fork: FAIL child %d exited with %d\n", n, WEXITSTATUS(st));
            failures++;
        }
    }
    atomic_store(&stop, true);
    for (int i = 0; i < WORKERS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < SHARED; i++) {
        unsigned char *p = atomic_exchange(&shared[i], NULL);
        if (!p) continue;
        size_t size, off = check_block(p, &size);
        if (off != (size_t)-1) {
            printf("fork: FAIL parent: block %p of %zu bytes changed at byte %zu\n", (void *)p, size, off);
            failures++;
        }
        free(p);
    }
    printf("fork: %d forks, %d failed, %ld worker operations, %.2f s\n", FORKS, failures, atomic_load(&worker_ops),
           now_s() - t0);
    return failures ? 1 : 0;
}

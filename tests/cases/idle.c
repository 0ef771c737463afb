/* Memory goes back while the program sits idle (mallard's background purger).
 *
 *   idle live     two threads build ~512 MiB of mixed sizes (small blocks, medium blocks,
 *                 huge blocks), each frees what it built, then all threads sit idle making no
 *                 allocator calls (free chunks of a live thread's chunk heap, 64 KiB to 4 MiB,
 *                 wait for that thread's next allocation: not in this mix);
 *   idle exited   the two threads build the same with chunks too, free half, and exit; main
 *                 frees the rest (into abandoned segments) and sits idle;
 *   idle fork     as `live`, and while the purger works the process forks: the child
 *                 allocates and frees 64 MiB of its own, sits idle, and must give it back too;
 *   idle main-exit  main frees a burst and calls pthread_exit: the process must still end
 *                 (the purger never keeps it alive).
 *
 * The idle part polls RSS (/proc/self/statm) every 50 ms for up to LIMIT_MS (20 s, or
 * argv[2] ms: far above the purge delay, so that a loaded machine does not fail it) and prints the
 * first time it is at most 3 % of the peak (getrusage). Exit status: 0 if it got there, 3 if
 * not (so that with the purger off the program fails). */
#define _GNU_SOURCE
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 2
#define PER_THREAD (256ull << 20)
static long LIMIT_MS = 20000; /* argv[2] sets another */

static void **blocks[THREADS];
static size_t counts[THREADS];
static pthread_barrier_t built, freed;

static long now_ms(void) { return (long)(now_s() * 1000); }

/* Resident bytes, read without stdio: the idle part must make no allocator calls. */
static size_t rss_bytes(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strchr(buf, ' ');
    return p ? strtoul(p + 1, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

static size_t peak_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

static int with_chunks = 1;

/* A size from the mix: mostly small, some medium, a few chunks and huge blocks. */
static size_t pick(uint64_t *rng) {
    uint64_t r = rng_next(rng);
    switch (r % 100) {
    case 0: return (4u << 20) + (r >> 40) % (8u << 20);  /* huge */
    case 1: case 2: /* chunk (or huge) */
        return with_chunks ? (128u << 10) + (r >> 40) % (1u << 20) : (4u << 20) + (r >> 40) % (1u << 20);
    case 3: case 4: case 5: case 6: case 7: return 1024 + (r >> 40) % (60u << 10); /* medium */
    default: return 16 + (r >> 40) % 1000; /* small */
    }
}

static void build(int t) {
    uint64_t rng = 0x1234567 + (uint64_t)t;
    size_t cap = 1 << 20, n = 0, total = 0;
    void **v = malloc(cap * sizeof *v);
    while (total < PER_THREAD && n < cap) {
        size_t sz = pick(&rng);
        unsigned char *p = malloc(sz);
        if (!p) { fprintf(stderr, "idle: malloc(%zu) failed\n", sz); exit(1); }
        memset(p, (int)(n & 0xff) | 1, sz);
        v[n++] = p;
        total += sz;
    }
    blocks[t] = v;
    counts[t] = n;
}

/* Frees every other block of thread t's list (parity 0 or 1). */
static void free_half(int t, int parity) {
    for (size_t i = (size_t)parity; i < counts[t]; i += 2) {
        free(blocks[t][i]);
        blocks[t][i] = NULL;
    }
}

static int live_mode;

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    build(t);
    pthread_barrier_wait(&built);
    free_half(t, 0);
    if (live_mode) {
        free_half(t, 1);
        pthread_barrier_wait(&freed);
        pause(); /* idle for good: the process ends when main exits */
    }
    return NULL;
}

/* Sits idle; returns the ms it took for RSS to fall to 3 % of the peak, or -1. */
static long wait_idle(const char *who) {
    size_t peak = peak_bytes();
    long start = now_ms();
    size_t rss;
    for (;;) {
        rss = rss_bytes();
        long t = now_ms() - start;
        if (rss * 100 <= peak * 3) {
            printf("%s: RSS %.1f MiB of a %.1f MiB peak (%.1f %%) after %ld ms idle\n", who, rss / 1048576.0,
                   peak / 1048576.0, 100.0 * rss / peak, t);
            return t;
        }
        if (t >= LIMIT_MS) break;
        usleep(50 * 1000);
    }
    printf("%s: RSS still %.1f MiB of a %.1f MiB peak (%.1f %%) after %ld ms idle\n", who, rss / 1048576.0,
           peak / 1048576.0, 100.0 * rss / peak, LIMIT_MS);
    return -1;
}

static int child_part(void) {
    /* Its own burst: 64 MiB in 4 KiB blocks, freed, then idle. */
    enum { N = 16384 };
    static void *v[N];
    for (int i = 0; i < N; i++) {
        v[i] = malloc(4096);
        if (!v[i]) return 1;
        memset(v[i], 7, 4096);
    }
    for (int i = 0; i < N; i++) free(v[i]);
    size_t before = rss_bytes();
    long start = now_ms();
    while (now_ms() - start < LIMIT_MS) {
        /* The child's RSS includes what it shares with the parent; its own burst must go. */
        if (rss_bytes() + (48u << 20) <= before) {
            printf("child: gave back its 64 MiB burst after %ld ms idle\n", now_ms() - start);
            return 0;
        }
        usleep(50 * 1000);
    }
    printf("child: kept its burst (RSS %.1f MiB, %.1f before)\n", rss_bytes() / 1048576.0, before / 1048576.0);
    return 3;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "live";
    if (argc > 2) LIMIT_MS = atol(argv[2]);
    require_mallard_if_asked("idle");
    if (strcmp(mode, "main-exit") == 0) {
        build(0);
        free_half(0, 0);
        free_half(0, 1);
        free(blocks[0]);
        printf("main-exit: freed, main thread exits\n");
        fflush(stdout);
        pthread_exit(NULL);
    }
    live_mode = strcmp(mode, "exited") != 0;
    /* Free chunks (64 KiB to 4 MiB) of a live thread wait for its next allocation. */
    with_chunks = !live_mode;
    pthread_barrier_init(&built, NULL, THREADS);
    pthread_barrier_init(&freed, NULL, THREADS + 1);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
    if (live_mode) {
        pthread_barrier_wait(&freed);
    } else {
        for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
        for (int t = 0; t < THREADS; t++) free_half(t, 1); /* into abandoned segments */
    }
    for (int t = 0; t < THREADS; t++) free(blocks[t]);
    if (strcmp(mode, "fork") == 0) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) _exit(child_part());
        int status = 0;
        long r = wait_idle(mode);
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("fork: child failed (status %d)\n", status);
            return 3;
        }
        return r < 0 ? 3 : 0;
    }
    return wait_idle(mode) < 0 ? 3 : 0;
}

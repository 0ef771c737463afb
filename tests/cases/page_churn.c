/* Churn for the OS page size: run under page_size_shim.so (a kernel with 16 or 64 KiB pages,
 * see there) with MALLARD_PURGE_DELAY_MS=0, every decommit and guard of mallard's is checked
 * against the bigger page; this program makes each kind of them happen and checks that no
 * live byte is lost to one:
 *
 * - the page-aligned functions (valloc, pvalloc, posix_memalign, memalign, aligned_alloc at
 *   the page) return blocks aligned to the page `sysconf` reports, whose usable size is sane;
 * - 4 threads, each round: small blocks of several classes freed in scattered patterns that
 *   leave pages half used (the in-page purge of free OS pages: live blocks sit next to whole
 *   free 4 KiB granules, but not always whole free OS pages), then `mallard_collect(true)`;
 *   medium and chunk-heap blocks; huge blocks grown and shrunk by realloc (in place, and moved
 *   by mremap), a huge block aligned to 8 MiB; some blocks freed by another thread; calloc
 *   that must read zero on memory purged before;
 * - every live block keeps a pattern that is checked before it is freed or after a purge.
 *
 * `page_churn [ROUNDS]` (default 6). Prints the page size it sees first; any mismatch or bad
 * alignment stops it with one line and exit code 1.
 *
 * `page_churn misaligned-madvise` and `page_churn short-madvise`: the check that the shim is
 * there and works, a MADV_DONTNEED of 4 KiB at 4 KiB into a page-aligned mapping, or of 4 KiB at
 * its start, which the shim must stop (it returns 2 if the call comes back). */
#define _GNU_SOURCE
#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 4
#define SMALL_N 3000

static size_t page;
static int rounds = 6;
static void (*collect)(bool);

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "page_churn: FAIL ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    _exit(1);
}

static uint64_t seed_of(const void *p, size_t n) { return mix64((uintptr_t)p ^ (n << 40)); }

static void fill(void *p, size_t n) { fill_pattern(p, n, seed_of(p, n)); }

static void check(const char *what, const void *p, size_t n) {
    size_t off = check_pattern(p, n, seed_of(p, n));
    if (off != (size_t)-1)
        fail("%s: block %p of %zu bytes lost byte %zu (now %#x)", what, p, n, off, ((const unsigned char *)p)[off]);
}

static void check_zero(const char *what, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 8)
        if (p[i]) fail("%s: block %p of %zu bytes: byte %zu is %#x, not zero", what, (void *)p, n, i, p[i]);
}

/* The block is aligned to the page; its usable size covers `need` and every usable byte can be
 * written. */
static void check_aligned(const char *what, void *p, size_t need) {
    if (!p) fail("%s(%zu): NULL", what, need);
    if ((uintptr_t)p % page) fail("%s(%zu) = %p: not aligned to the %zu-byte page", what, need, p, page);
    size_t u = malloc_usable_size(p);
    if (u < need || u > need + 2 * page + (8u << 20))
        fail("%s(%zu) = %p: malloc_usable_size %zu", what, need, p, u);
    memset(p, 0xa5, u);
}

static void aligned_functions(void) {
    size_t sizes[] = {1, 100, 5000, page - 1, page, page + 1, 3 * page + 17, 70000, 1 << 20, (5 << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        void *a = valloc(n), *b = pvalloc(n), *c = memalign(page, n), *d = NULL, *e = aligned_alloc(page, n);
        if (posix_memalign(&d, page, n)) fail("posix_memalign(%zu, %zu) failed", page, n);
        check_aligned("valloc", a, n);
        check_aligned("pvalloc", b, (n + page - 1) / page * page);
        check_aligned("memalign", c, n);
        check_aligned("posix_memalign", d, n);
        check_aligned("aligned_alloc", e, n);
        free(a), free(b), free(c), free(d), free(e);
    }
    /* Every pvalloc size is whole pages, pvalloc(0) one page. */
    void *z = pvalloc(0);
    check_aligned("pvalloc", z, page);
    free(z);
}

/* Blocks handed to the next thread, which checks and frees them. */
static struct {
    pthread_mutex_t lock;
    void *p[256];
    size_t n[256];
    int len;
} box[THREADS];

static void give(int to, void *p, size_t n) {
    pthread_mutex_lock(&box[to].lock);
    if (box[to].len < 256) {
        box[to].p[box[to].len] = p;
        box[to].n[box[to].len++] = n;
        p = NULL;
    }
    pthread_mutex_unlock(&box[to].lock);
    if (p) {
        check("local free", p, n);
        free(p);
    }
}

static void take_all(int self) {
    pthread_mutex_lock(&box[self].lock);
    for (int i = 0; i < box[self].len; i++) {
        check("remote free", box[self].p[i], box[self].n[i]);
        free(box[self].p[i]);
    }
    box[self].len = 0;
    pthread_mutex_unlock(&box[self].lock);
}

static void purge(void) {
    if (collect) collect(true);
}

/* Small blocks of one size, freed so that the survivors are scattered: pattern 0 keeps the
 * blocks in the first 4 KiB of every 16 KiB, 1 every 7th block, 2 the blocks that cross a
 * 4 KiB boundary, 3 one block in 64 KiB. */
static void small_round(int self, uint64_t *rng, size_t size, int pattern) {
    static __thread void *blk[SMALL_N];
    int n = SMALL_N;
    if (size * n > (8u << 20)) n = (int)((8u << 20) / size);
    for (int i = 0; i < n; i++) {
        blk[i] = malloc(size);
        if (!blk[i]) fail("malloc(%zu) = NULL", size);
        fill(blk[i], size);
    }
    for (int i = 0; i < n; i++) {
        uintptr_t a = (uintptr_t)blk[i];
        bool keep = pattern == 0   ? a % 16384 < 4096
                    : pattern == 1 ? i % 7 == 0
                    : pattern == 2 ? a / 4096 != (a + size - 1) / 4096
                                   : a % 65536 < size;
        if (!keep) {
            check("small", blk[i], size);
            if (rng_next(rng) % 16 == 0)
                give((self + 1) % THREADS, blk[i], size);
            else
                free(blk[i]);
            blk[i] = NULL;
        }
    }
    purge();
    /* Other sizes meanwhile: new pages, new segments (the purge under pressure). */
    for (int i = 0; i < 64; i++) {
        size_t m = 16 + rng_next(rng) % 2000;
        unsigned char *c = calloc(1, m);
        if (!c) fail("calloc(%zu) = NULL", m);
        check_zero("calloc small", c, m);
        free(c);
    }
    for (int i = 0; i < n; i++)
        if (blk[i]) {
            check("small after purge", blk[i], size);
            free(blk[i]);
        }
    /* The purged memory again, through calloc: it must read zero. */
    for (int i = 0; i < n / 4; i++) {
        blk[i] = calloc(1, size);
        if (!blk[i]) fail("calloc(%zu) = NULL", size);
        check_zero("calloc after purge", blk[i], size);
        fill(blk[i], size);
    }
    for (int i = 0; i < n / 4; i++) {
        check("small refill", blk[i], size);
        free(blk[i]);
    }
}

static void medium_and_large(int self, uint64_t *rng) {
    void *b[48];
    size_t n[48];
    for (int i = 0; i < 48; i++) {
        n[i] = 8193 + rng_next(rng) % (i % 3 == 0 ? (3u << 20) : 500000);
        b[i] = i % 5 == 0 ? calloc(1, n[i]) : malloc(n[i]);
        if (!b[i]) fail("malloc(%zu) = NULL", n[i]);
        if (i % 5 == 0) check_zero("calloc large", b[i], n[i]);
        fill(b[i], n[i]);
    }
    for (int i = 0; i < 48; i += 2) {
        check("large", b[i], n[i]);
        if (i % 8 == 0)
            give((self + 1) % THREADS, b[i], n[i]);
        else
            free(b[i]);
    }
    purge();
    for (int i = 1; i < 48; i += 2) {
        check("large after purge", b[i], n[i]);
        free(b[i]);
    }
}

/* A huge block grown and shrunk through sizes that stay in its mapping, outgrow it (mremap)
 * and come back; its first bytes checked at each step. */
static void huge_round(int self, uint64_t *rng) {
    static const size_t steps[] = {5u << 20, (9u << 20) + 5, 17u << 20, (6u << 20) + 4097, 33u << 20,
                                   (4u << 20) + 1, 70u << 20, 5u << 20, (12u << 20) + 77, 4u << 20};
    size_t n = steps[0];
    unsigned char *p = malloc(n);
    if (!p) fail("malloc(%zu) = NULL", n);
    fill(p, n);
    for (size_t i = 1; i < sizeof steps / sizeof *steps; i++) {
        size_t m = steps[i] + (rng_next(rng) % 3) * 8191;
        size_t keep = n < m ? n : m;
        check("huge before realloc", p, n);
        uint64_t seed = seed_of(p, n);
        uintptr_t old = (uintptr_t)p;
        unsigned char *q = realloc(p, m);
        if (!q) fail("realloc(%zu -> %zu) = NULL", n, m);
        /* The kept bytes hold the old block's pattern. */
        size_t off = check_pattern(q, keep, seed);
        if (off != (size_t)-1) fail("realloc %zu -> %zu (%#lx -> %p) lost byte %zu", n, m, (unsigned long)old, (void *)q, off);
        if (malloc_usable_size(q) < m) fail("realloc to %zu: usable size %zu", m, malloc_usable_size(q));
        p = q;
        n = m;
        fill(p, n);
    }
    check("huge", p, n);
    if (self % 2) give((self + 1) % THREADS, p, n);
    else free(p);
    /* A huge block aligned beyond a segment, and a zeroed one on reused mappings. */
    void *a = NULL;
    if (posix_memalign(&a, 8u << 20, (9u << 20) + 123)) fail("posix_memalign(8 MiB) failed");
    fill(a, (9u << 20) + 123);
    unsigned char *z = calloc(1, (6u << 20) + 5);
    if (!z) fail("calloc huge = NULL");
    check_zero("calloc huge", z, (6u << 20) + 5);
    check("aligned huge", a, (9u << 20) + 123);
    free(a);
    free(z);
    purge();
}

static void *worker(void *arg) {
    int self = (int)(intptr_t)arg;
    uint64_t rng = mix64(self + 1) | 1;
    static const size_t sizes[] = {16, 48, 112, 256, 640, 1024, 2000, 3072, 5000, 8192};
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 4; k++) small_round(self, &rng, sizes[(r * 4 + k + self) % 10], (k + r + self) % 4);
        take_all(self);
        medium_and_large(self, &rng);
        huge_round(self, &rng);
        take_all(self);
    }
    return NULL;
}

int main(int argc, char **argv) {
    require_mallard_if_asked("page_churn");
    if (argc > 1) rounds = atoi(argv[1]);
    page = (size_t)sysconf(_SC_PAGESIZE);
    printf("page_churn: sysconf(_SC_PAGESIZE) = %zu, getpagesize() = %d\n", page, getpagesize());
    fflush(stdout);
    if ((size_t)getpagesize() != page) fail("getpagesize() %d differs from sysconf %zu", getpagesize(), page);
    if (argc > 1 && (!strcmp(argv[1], "misaligned-madvise") || !strcmp(argv[1], "short-madvise"))) {
        unsigned char *m = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED || (uintptr_t)m % page) fail("mmap of 4 pages = %p: not aligned to the page", (void *)m);
        int r = argv[1][0] == 'm' ? madvise(m + 4096, 4096, MADV_DONTNEED) : madvise(m, 4096, MADV_DONTNEED);
        printf("page_churn: the madvise returned %d\n", r);
        return 2;
    }
    collect = (void (*)(bool))dlsym(RTLD_DEFAULT, "mallard_collect");
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&box[i].lock, NULL);
    aligned_functions();
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i)) fail("pthread_create");
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) take_all(i);
    aligned_functions();
    purge();
    void (*stats)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "mallard_stats");
    if (stats) {
        int64_t s[13];
        stats(s);
        printf("page_churn: ok; bytes purged %lld, live %lld\n", (long long)s[9], (long long)s[0]);
    } else {
        printf("page_churn: ok\n");
    }
    return 0;
}

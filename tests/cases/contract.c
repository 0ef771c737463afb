/* The C contract of libmallard.so (glibc's, function by function), as numbered checks.
 *
 * Each check prints `ok N description` or `FAIL N description (details)`; the program exits 1
 * if any failed. Run it with libmallard.so preloaded or linked. Run without it, it checks
 * glibc: the checks of mallard's own behaviour (its functions, and the places where mallard
 * follows a newer glibc than 2.36) then print `ok N description # SKIP not mallard`.
 *
 * `--require-mallard` makes it fail unless mallard serves the allocation functions (every
 * one of them must be found in a file whose name contains "libmallard"). */
#define _GNU_SOURCE
#include "common.h"

#include <dlfcn.h>
#include <errno.h>
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

/* mallinfo is deprecated; failure messages print the address a block had before realloc. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* glibc's own names, exported by glibc and by mallard. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* mallard's API (include/mallard.h), looked up at run time so the program runs on glibc. */
struct mallard_stats {
    int64_t live_bytes, mapped_bytes, resident_bytes, segments, huge_blocks, huge_bytes, large_blocks,
        large_bytes, remote_frees, bytes_purged, heaps_created, free_chunks, largest_free_chunk;
};
static size_t (*m_usable_size)(const void *);
static void (*m_collect)(bool);
static void (*m_stats_print)(void);
static void (*m_set_purge_delay_ms)(uint64_t);
static void (*m_stats)(struct mallard_stats *);
static bool mallard;

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

static size_t page;
static int number, failed, skipped;
static char why[1024];

/* Records why the running check failed (the first reason wins) and returns false. */
__attribute__((format(printf, 1, 2))) static bool fail(const char *fmt, ...) {
    if (why[0]) return false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return false;
}

#define EXPECT(cond, ...)                        \
    do {                                         \
        if (!(cond)) return fail(__VA_ARGS__);   \
    } while (0)

typedef bool (*check_fn)(void);

static void run(const char *desc, check_fn f, bool mallard_only) {
    number++;
    if (mallard_only && !mallard) {
        printf("ok %d %s # SKIP not mallard\n", number, desc);
        skipped++;
        fflush(stdout);
        return;
    }
    why[0] = 0;
    bool ok = f();
    if (ok && why[0] == 0) {
        printf("ok %d %s\n", number, desc);
    } else {
        printf("FAIL %d %s (%s)\n", number, desc, why[0] ? why : "no detail");
        failed++;
    }
    fflush(stdout);
}

/* A size the compiler cannot see (it warns about impossible constant sizes). */
static size_t Z(size_t n) {
    __asm__ volatile("" : "+r"(n));
    return n;
}

static bool aligned_to(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* The writable size of p: malloc_usable_size, checked against mallard's own answer. */
static size_t usable(void *p) {
    size_t n = malloc_usable_size(p);
    if (mallard && m_usable_size(p) != n)
        fail("mallard_usable_size(%p) = %zu but malloc_usable_size = %zu", p, m_usable_size(p), n);
    return n;
}

/* Writes the first and last byte of each page of p[0..n) (and the last byte) and reads them
 * back: the memory is there and writable, without touching all of it. */
static bool touch(unsigned char *p, size_t n, const char *what) {
    if (n == 0) return true;
    for (size_t i = 0; i < n; i += page) p[i] = (unsigned char)(i / page + 1);
    p[n - 1] = 0x5a;
    for (size_t i = 0; i + 1 < n; i += page)
        EXPECT(p[i] == (unsigned char)(i / page + 1), "%s %p: byte %zu does not keep what was written", what, p, i);
    EXPECT(p[n - 1] == 0x5a, "%s %p: last byte %zu does not keep what was written", what, p, n - 1);
    return true;
}

static long rss_pages(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = -1;
        fclose(f);
    }
    return rss;
}

/* ---- the checks ---- */

static bool malloc_zero_unique(void) {
    void *a = malloc(0), *b = malloc(0), *c = malloc(0);
    EXPECT(a && b && c, "malloc(0) returned NULL (%p %p %p)", a, b, c);
    EXPECT(a != b && b != c && a != c, "malloc(0) results are not unique: %p %p %p", a, b, c);
    EXPECT(aligned_to(a, 16) && aligned_to(b, 16), "malloc(0) not 16-aligned: %p %p", a, b);
    free(a);
    free(b);
    free(c);
    void *d = calloc(0, 10), *e = calloc(10, 0), *f = realloc(NULL, 0);
    EXPECT(d && e && f, "calloc(0,10)=%p calloc(10,0)=%p realloc(NULL,0)=%p: NULL", d, e, f);
    EXPECT(d != e && e != f && d != f, "zero-size blocks not unique: %p %p %p", d, e, f);
    free(d);
    free(e);
    free(f);
    return true;
}

static bool free_null(void) {
    errno = 777;
    free(NULL);
    EXPECT(errno == 777, "free(NULL) changed errno to %d", errno);
    return true;
}

static bool realloc_null_is_malloc(void) {
    unsigned char *p = realloc(NULL, 100);
    EXPECT(p, "realloc(NULL, 100) returned NULL");
    EXPECT(aligned_to(p, 16), "realloc(NULL, 100) = %p not 16-aligned", (void *)p);
    EXPECT(usable(p) >= 100, "usable size %zu < 100", usable(p));
    memset(p, 0x33, 100);
    free(p);
    void *q = reallocarray(NULL, 10, 10);
    EXPECT(q, "reallocarray(NULL, 10, 10) returned NULL");
    EXPECT(usable(q) >= 100, "reallocarray(NULL, 10, 10): usable size %zu < 100", usable(q));
    free(q);
    return true;
}

static bool realloc_zero_frees(void) {
    size_t sizes[] = {1, 100, 4000, 100 * KiB, MiB, 8 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *p = malloc(sizes[i]);
        EXPECT(p, "malloc(%zu) returned NULL", sizes[i]);
        memset(p, 1, sizes[i]);
        void *q = realloc(p, 0);
        EXPECT(q == NULL, "realloc(p of %zu bytes, 0) returned %p, not NULL", sizes[i], q);
    }
    return true;
}

/* errno must be ENOMEM after f() returned NULL. */
#define EXPECT_ENOMEM(call)                                                                      \
    do {                                                                                         \
        errno = 0;                                                                               \
        void *r_ = (call);                                                                       \
        EXPECT(r_ == NULL, "%s returned %p, not NULL", #call, r_);                               \
        EXPECT(errno == ENOMEM, "%s: errno %d (%s), not ENOMEM", #call, errno, strerror(errno)); \
    } while (0)

static bool calloc_overflow(void) {
    EXPECT_ENOMEM(calloc(Z(SIZE_MAX / 2 + 1), 2));
    EXPECT_ENOMEM(calloc(2, Z(SIZE_MAX / 2 + 1)));
    EXPECT_ENOMEM(calloc(Z(SIZE_MAX), Z(SIZE_MAX)));
    EXPECT_ENOMEM(calloc(Z((size_t)1 << 32), Z((size_t)1 << 32)));
    EXPECT_ENOMEM(calloc(3, Z(SIZE_MAX / 3 + 1)));
    EXPECT_ENOMEM(calloc(1, Z(SIZE_MAX)));
    return true;
}

static bool reallocarray_overflow(void) {
    unsigned char *p = malloc(64);
    EXPECT(p, "malloc(64) returned NULL");
    fill_pattern(p, 64, 6);
    EXPECT_ENOMEM(reallocarray(p, Z(SIZE_MAX / 2 + 1), 2));
    EXPECT_ENOMEM(reallocarray(p, Z((size_t)1 << 33), Z((size_t)1 << 33)));
    EXPECT_ENOMEM(reallocarray(NULL, Z(SIZE_MAX), 16));
    size_t off = check_pattern(p, 64, 6);
    EXPECT(off == (size_t)-1, "block changed by a failed reallocarray at byte %zu", off);
    unsigned char *q = reallocarray(p, 100, 10);
    EXPECT(q, "reallocarray(p, 100, 10) returned NULL");
    off = check_pattern(q, 64, 6);
    EXPECT(off == (size_t)-1, "reallocarray(p, 100, 10) lost byte %zu", off);
    EXPECT(usable(q) >= 1000, "reallocarray(p, 100, 10): usable size %zu", usable(q));
    free(q);
    return true;
}

static bool impossible_sizes(void) {
    EXPECT_ENOMEM(malloc(Z(SIZE_MAX)));
    EXPECT_ENOMEM(malloc(Z(SIZE_MAX - 4095)));
    EXPECT_ENOMEM(malloc(Z((size_t)PTRDIFF_MAX + 1)));
    EXPECT_ENOMEM(malloc(Z((size_t)PTRDIFF_MAX)));
    EXPECT_ENOMEM(malloc(Z((size_t)1 << 47)));   /* more than a 47-bit address space */
    EXPECT_ENOMEM(memalign(4096, Z((size_t)PTRDIFF_MAX + 1)));
    EXPECT_ENOMEM(valloc(Z(SIZE_MAX)));
    EXPECT_ENOMEM(pvalloc(Z(SIZE_MAX)));
    EXPECT_ENOMEM(pvalloc(Z(SIZE_MAX - 100)));
    EXPECT_ENOMEM(__libc_malloc(Z(SIZE_MAX)));
    return true;
}

static bool realloc_failure_keeps_block(void) {
    size_t sizes[] = {40, 1000, 100 * KiB, MiB, 8 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(n);
        EXPECT(p, "malloc(%zu) returned NULL", n);
        fill_pattern(p, n, n);
        EXPECT_ENOMEM(realloc(p, Z(SIZE_MAX)));
        EXPECT_ENOMEM(realloc(p, Z((size_t)PTRDIFF_MAX + 1)));
        EXPECT_ENOMEM(realloc(p, Z((size_t)1 << 47)));
        size_t off = check_pattern(p, n, n);
        EXPECT(off == (size_t)-1, "%zu-byte block changed at byte %zu by a failed realloc", n, off);
        free(p);
    }
    return true;
}

static bool posix_memalign_einval(void) {
    size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 100, 4097, SIZE_MAX, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        void *sentinel = (void *)(uintptr_t)0x5e5e5e50, *m = sentinel;
        errno = 1234;
        int r = posix_memalign(&m, bad[i], 16);
        EXPECT(r == EINVAL, "posix_memalign(align %zu) returned %d, not EINVAL", bad[i], r);
        EXPECT(m == sentinel, "posix_memalign(align %zu) wrote *memptr = %p", bad[i], m);
        EXPECT(errno == 1234, "posix_memalign(align %zu) changed errno to %d", bad[i], errno);
    }
    return true;
}

/* Sizes so close to SIZE_MAX that rounding them up to the alignment overflows. */
static bool aligned_impossible_sizes(void) {
    size_t aligns[] = {16, 32, 64, 128, 256, 4096, 65536, MiB, 64 * MiB};
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
        size_t a = aligns[i];
        size_t sizes[] = {SIZE_MAX, SIZE_MAX - a / 2, SIZE_MAX - a + 2, (size_t)PTRDIFF_MAX + 1};
        for (size_t j = 0; j < sizeof sizes / sizeof *sizes; j++) {
            size_t n = Z(sizes[j]);
            errno = 0;
            void *p = memalign(a, n);
            EXPECT(p == NULL && errno == ENOMEM, "memalign(%zu, %#zx) = %p (usable size %zu), errno %d: "
                   "want NULL with ENOMEM", a, n, p, p ? malloc_usable_size(p) : 0, errno);
            errno = 0;
            p = aligned_alloc(a, n);
            EXPECT(p == NULL && errno == ENOMEM, "aligned_alloc(%zu, %#zx) = %p (usable size %zu), errno %d: "
                   "want NULL with ENOMEM", a, n, p, p ? malloc_usable_size(p) : 0, errno);
            void *sentinel = (void *)(uintptr_t)0x5e5e5e50, *m = sentinel;
            int r = posix_memalign(&m, a, n);
            EXPECT(r == ENOMEM && m == sentinel, "posix_memalign(%zu, %#zx) returned %d, *memptr %p: want ENOMEM "
                   "and *memptr untouched", a, n, r, m);
        }
    }
    return true;
}

/* Mallard keeps errno unchanged when posix_memalign fails for lack of memory (POSIX says it
 * returns the error); glibc 2.36 sets errno to ENOMEM as well. */
static bool posix_memalign_enomem_keeps_errno(void) {
    void *m = NULL;
    errno = 4321;
    int r = posix_memalign(&m, 4096, Z(SIZE_MAX - 8192));
    EXPECT(r == ENOMEM, "posix_memalign(4096, SIZE_MAX - 8192) returned %d", r);
    EXPECT(errno == 4321, "posix_memalign failing with ENOMEM changed errno to %d", errno);
    return true;
}

static bool posix_memalign_ok(void) {
    for (size_t a = sizeof(void *); a <= 64 * MiB; a *= 2) {
        size_t sizes[] = {1, 100, a, a + 1};
        for (size_t i = 0; i < 4; i++) {
            void *m = NULL;
            errno = 99;
            int r = posix_memalign(&m, a, sizes[i]);
            EXPECT(r == 0 && m, "posix_memalign(align %zu, %zu) returned %d, %p", a, sizes[i], r, m);
            EXPECT(aligned_to(m, a), "posix_memalign(align %zu, %zu) = %p is not aligned", a, sizes[i], m);
            EXPECT(errno == 99, "posix_memalign(align %zu, %zu) changed errno to %d", a, sizes[i], errno);
            EXPECT(usable(m) >= sizes[i], "posix_memalign(align %zu, %zu): usable size %zu", a, sizes[i], usable(m));
            if (!touch(m, sizes[i], "posix_memalign block")) return false;
            free(m);
        }
    }
    return true;
}

/* glibc 2.38 and C23: aligned_alloc fails with EINVAL unless the alignment is a power of two
 * (glibc 2.36 rounds it up, as memalign). */
static bool aligned_alloc_einval(void) {
    size_t bad[] = {0, 3, 24, 48, 100, 4097, 3 * MiB};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        errno = 0;
        void *p = aligned_alloc(bad[i], 64);
        EXPECT(p == NULL, "aligned_alloc(%zu, 64) returned %p, not NULL", bad[i], p);
        EXPECT(errno == EINVAL, "aligned_alloc(%zu, 64): errno %d, not EINVAL", bad[i], errno);
    }
    return true;
}

static bool aligned_alloc_ok(void) {
    for (size_t a = 1; a <= 64 * MiB; a *= 2) {
        size_t sizes[] = {0, 1, 100, a, 3 * a / 2 + 1};
        for (size_t i = 0; i < 5; i++) {
            void *p = aligned_alloc(a, sizes[i]);
            EXPECT(p, "aligned_alloc(%zu, %zu) returned NULL", a, sizes[i]);
            EXPECT(aligned_to(p, a), "aligned_alloc(%zu, %zu) = %p is not aligned", a, sizes[i], p);
            EXPECT(usable(p) >= sizes[i], "aligned_alloc(%zu, %zu): usable size %zu", a, sizes[i], usable(p));
            if (!touch(p, sizes[i], "aligned_alloc block")) return false;
            free(p);
        }
    }
    return true;
}

static bool memalign_rounds_up(void) {
    struct {
        size_t asked, expect;
    } cases[] = {{24, 32}, {48, 64}, {100, 128}, {3000, 4096}, {5000, 8192}, {3 * MiB, 4 * MiB}, {0, 16}, {1, 16}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int rep = 0; rep < 8; rep++) {
            size_t n = 10 + 1000 * (size_t)rep;
            void *p = memalign(cases[i].asked, n);
            EXPECT(p, "memalign(%zu, %zu) returned NULL", cases[i].asked, n);
            EXPECT(aligned_to(p, cases[i].expect), "memalign(%zu, %zu) = %p is not %zu-aligned", cases[i].asked, n, p,
                   cases[i].expect);
            EXPECT(usable(p) >= n, "memalign(%zu, %zu): usable size %zu", cases[i].asked, n, usable(p));
            memset(p, 0x77, n);
            free(p);
        }
    }
    errno = 0;
    void *p = memalign(Z(SIZE_MAX / 2 + 2), 10);
    EXPECT(p == NULL && errno == EINVAL, "memalign(SIZE_MAX/2 + 2, 10) = %p, errno %d (want NULL, EINVAL)", p, errno);
    return true;
}

static bool valloc_pvalloc(void) {
    size_t sizes[] = {1, 100, 4095, 4096, 4097, 5000, 100 * KiB, MiB + 1, 5 * MiB + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        void *v = valloc(n);
        EXPECT(v && aligned_to(v, page), "valloc(%zu) = %p is not page aligned", n, v);
        EXPECT(usable(v) >= n, "valloc(%zu): usable size %zu", n, usable(v));
        if (!touch(v, n, "valloc block")) return false;
        size_t rounded = (n + page - 1) / page * page;
        void *pv = pvalloc(n);
        EXPECT(pv && aligned_to(pv, page), "pvalloc(%zu) = %p is not page aligned", n, pv);
        EXPECT(usable(pv) >= rounded, "pvalloc(%zu): usable size %zu < %zu (size rounded to pages)", n, usable(pv),
               rounded);
        if (!touch(pv, rounded, "pvalloc block (rounded size)")) return false;
        free(v);
        free(pv);
    }
    void *z = pvalloc(0);
    EXPECT(z && aligned_to(z, page), "pvalloc(0) = %p", z);
    free(z);
    return true;
}

/* Every block's whole usable size is its own: fill all of it with a byte of its own, in
 * many blocks at once, and check none was overwritten. */
static bool usable_size_all_writable(void) {
    enum { N = 600 };
    static unsigned char *blocks[N];
    static size_t asked[N], got[N];
    uint64_t rng = 12345;
    for (int i = 0; i < N; i++) {
        size_t n;
        if (i < 300) n = (size_t)i;                                   /* 0..299, every size */
        else if (i < 560) n = 300 + rng_next(&rng) % (64 * KiB);      /* small and medium */
        else if (i < 590) n = 64 * KiB + rng_next(&rng) % (4 * MiB);  /* large */
        else n = 4 * MiB + rng_next(&rng) % (12 * MiB);               /* huge */
        blocks[i] = malloc(n);
        asked[i] = n;
        EXPECT(blocks[i], "malloc(%zu) returned NULL", n);
        got[i] = usable(blocks[i]);
        EXPECT(got[i] >= n, "malloc(%zu) = %p: usable size %zu < size", n, (void *)blocks[i], got[i]);
        memset(blocks[i], (unsigned char)(i * 7 + 1), got[i]);
    }
    for (int i = 0; i < N; i++) {
        unsigned char v = (unsigned char)(i * 7 + 1);
        for (size_t k = 0; k < got[i]; k++)
            EXPECT(blocks[i][k] == v, "block %d (%zu bytes asked, %zu usable) at %p: byte %zu is %#x, not %#x: "
                   "another block overlaps its usable size", i, asked[i], got[i], (void *)blocks[i], k, blocks[i][k], v);
        free(blocks[i]);
    }
    EXPECT(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
    return true;
}

static bool free_keeps_errno(void) {
    enum { SMALL = 2000, LARGE = 24, HUGE = 4 };
    static void *small[SMALL], *large[LARGE], *huge[HUGE];
    for (int i = 0; i < SMALL; i++) small[i] = malloc(1 + (size_t)i * 37 % 3000);
    for (int i = 0; i < LARGE; i++) large[i] = malloc(i % 2 ? MiB : 600 * KiB + (size_t)i * 4096);
    for (int i = 0; i < HUGE; i++) huge[i] = malloc(64 * MiB);
    for (int i = 0; i < HUGE; i++) EXPECT(huge[i], "malloc(64 MiB) returned NULL");
    for (int i = 0; i < HUGE; i++) memset(huge[i], 1, 64 * MiB);
    for (int round = 0; round < 2; round++) {
        /* The second round with the purge delay at 0, so that frees also give memory back. */
        if (round == 1 && mallard) m_set_purge_delay_ms(0);
        errno = 4242;
        for (int i = 0; i < SMALL; i++) {
            free(small[i]);
            EXPECT(errno == 4242, "free of small block %d changed errno to %d", i, errno);
        }
        for (int i = 0; i < LARGE; i++) {
            free(large[i]);
            EXPECT(errno == 4242, "free of large block %d changed errno to %d", i, errno);
        }
        for (int i = 0; i < HUGE; i++) {
            free(huge[i]);
            EXPECT(errno == 4242, "free of 64 MiB block %d changed errno to %d", i, errno);
        }
        if (mallard) {
            m_collect(true);
            EXPECT(errno == 4242, "mallard_collect(true) changed errno to %d", errno);
        }
        if (round == 0) {
            for (int i = 0; i < SMALL; i++) small[i] = malloc(1 + (size_t)i * 53 % 5000);
            for (int i = 0; i < LARGE; i++) large[i] = malloc(i % 2 ? MiB + 16 : 2 * MiB);
            for (int i = 0; i < HUGE; i++) huge[i] = malloc(64 * MiB);
            for (int i = 0; i < HUGE; i++) memset(huge[i], 2, 64 * MiB);
        }
    }
    if (mallard) m_set_purge_delay_ms(500);
    return true;
}

static bool alignment_16(void) {
    uint64_t rng = 99;
    enum { N = 4000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        size_t n;
        switch (i % 8) {
        case 7: n = rng_next(&rng) % (5 * MiB); break;
        case 6: n = rng_next(&rng) % (256 * KiB); break;
        default: n = rng_next(&rng) % 1024; break;
        }
        p[i] = (i % 3 == 0) ? calloc(1, n) : malloc(n);
        EXPECT(p[i], "allocation %d of %zu bytes returned NULL", i, n);
        EXPECT(aligned_to(p[i], 16), "allocation %d of %zu bytes = %p is not 16-aligned", i, n, p[i]);
        if (i % 5 == 0) {
            p[i] = realloc(p[i], n / 2 + 7);
            EXPECT(p[i] && aligned_to(p[i], 16), "realloc to %zu = %p is not 16-aligned", n / 2 + 7, p[i]);
        }
    }
    for (int i = 0; i < N; i++) free(p[i]);
    return true;
}

static bool calloc_fresh_untouched(void) {
    long before = rss_pages();
    EXPECT(before > 0, "cannot read /proc/self/statm");
    size_t n = GiB;
    unsigned char *p = calloc(1, n);
    EXPECT(p, "calloc(1, 1 GiB) returned NULL");
    long after = rss_pages();
    /* Reading untouched anonymous memory maps the shared zero page, which is not resident. */
    for (size_t i = 0; i < n; i += 16 * MiB) EXPECT(p[i] == 0, "calloc(1 GiB): byte %zu is %d", i, p[i]);
    EXPECT(p[n - 1] == 0, "calloc(1 GiB): last byte is %d", p[n - 1]);
    long grown = (after - before) * (long)page;
    EXPECT(grown < 64 * (long)MiB, "calloc(1, 1 GiB) made RSS grow by %ld MiB: it wrote the fresh pages",
           grown / (long)MiB);
    free(p);
    return true;
}

static bool calloc_reused_is_zero(void) {
    size_t sizes[] = {1, 24, 200, 1000, 5000, 40000, 300 * KiB, 700 * KiB, MiB, 3 * MiB, 6 * MiB, 20 * MiB};
    for (int rep = 0; rep < 3; rep++) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t n = sizes[i];
            unsigned char *p = malloc(n);
            EXPECT(p, "malloc(%zu) returned NULL", n);
            memset(p, 0xa5, usable(p));
            uintptr_t was = (uintptr_t)p;
            free(p);
            unsigned char *q = (rep == 1) ? calloc(n, 1) : calloc(1, n);
            EXPECT(q, "calloc(%zu) returned NULL", n);
            for (size_t k = 0; k < n; k++)
                EXPECT(q[k] == 0, "calloc(%zu) after free of a dirty block: byte %zu is %#x (block %p, was %p)", n, k,
                       q[k], (void *)q, (void *)was);
            free(q);
        }
    }
    /* calloc with several elements, not 1. */
    unsigned *a = calloc(1000, sizeof(unsigned));
    EXPECT(a, "calloc(1000, 4) returned NULL");
    for (int i = 0; i < 1000; i++) EXPECT(a[i] == 0, "calloc(1000, 4): element %d is %u", i, a[i]);
    free(a);
    return true;
}

/* Grows one block through every size range and back, checking what it holds at each step. */
static bool realloc_keeps_contents(void) {
    size_t chain[] = {1, 8, 24, 100, KiB, 4 * KiB, 100 * KiB, 600 * KiB, MiB, 3 * MiB, 10 * MiB, 100 * MiB};
    size_t nchain = sizeof chain / sizeof *chain;
    unsigned char *p = malloc(chain[0]);
    EXPECT(p, "malloc(1) returned NULL");
    fill_pattern(p, 1, 42);
    size_t have = 1;
    for (size_t step = 1; step < 2 * nchain - 1; step++) {
        size_t n = step < nchain ? chain[step] : chain[2 * nchain - 2 - step];
        unsigned char *q = realloc(p, n);
        EXPECT(q, "realloc(%p, %zu) returned NULL", (void *)p, n);
        size_t keep = have < n ? have : n;
        size_t off = check_pattern(q, keep, 42);
        EXPECT(off == (size_t)-1, "realloc from %zu to %zu bytes (%p -> %p) lost byte %zu", have, n, (void *)p,
               (void *)q, off);
        EXPECT(aligned_to(q, 16), "realloc to %zu = %p not 16-aligned", n, (void *)q);
        EXPECT(usable(q) >= n, "realloc to %zu: usable size %zu", n, usable(q));
        fill_pattern(q, n, 42);
        p = q;
        have = n;
    }
    free(p);
    /* Direct jumps between the ranges, both ways. */
    size_t jumps[] = {10, 1000, 50 * KiB, 200 * KiB, 900 * KiB, 2 * MiB, 5 * MiB, 10 * MiB};
    size_t nj = sizeof jumps / sizeof *jumps;
    for (size_t i = 0; i < nj; i++) {
        for (size_t j = 0; j < nj; j++) {
            if (i == j) continue;
            size_t a = jumps[i], b = jumps[j];
            unsigned char *x = malloc(a);
            EXPECT(x, "malloc(%zu) returned NULL", a);
            fill_pattern(x, a, a ^ b);
            unsigned char *y = realloc(x, b);
            EXPECT(y, "realloc(%zu -> %zu) returned NULL", a, b);
            size_t off = check_pattern(y, a < b ? a : b, a ^ b);
            EXPECT(off == (size_t)-1, "realloc from %zu to %zu bytes (%p -> %p) lost byte %zu", a, b, (void *)x,
                   (void *)y, off);
            free(y);
        }
    }
    /* A realloc of an over-aligned block keeps its contents too. */
    unsigned char *m = memalign(4096, 3000);
    EXPECT(m, "memalign(4096, 3000) returned NULL");
    fill_pattern(m, 3000, 7);
    unsigned char *g = realloc(m, 50000);
    EXPECT(g && check_pattern(g, 3000, 7) == (size_t)-1, "realloc of a memalign block lost its contents");
    free(g);
    return true;
}

/* Many blocks at once keep their own contents through frees and reuse. */
static bool many_blocks_integrity(void) {
    enum { N = 20000 };
    static unsigned char *b[N];
    static size_t sz[N];
    uint64_t rng = 777;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            if (b[i] && (round == 0 || rng_next(&rng) % 2)) continue;
            if (b[i]) {
                size_t off = check_pattern(b[i], sz[i], (uint64_t)i * 1000003 + sz[i]);
                EXPECT(off == (size_t)-1, "block %d (%zu bytes at %p) changed at byte %zu before its free", i, sz[i],
                       (void *)b[i], off);
                free(b[i]);
            }
            size_t n = (i % 100 == 0) ? rng_next(&rng) % (600 * KiB) : rng_next(&rng) % 2048;
            b[i] = malloc(n);
            EXPECT(b[i], "malloc(%zu) returned NULL", n);
            sz[i] = n;
            fill_pattern(b[i], n, (uint64_t)i * 1000003 + n);
        }
    }
    for (int i = 0; i < N; i++) {
        size_t off = check_pattern(b[i], sz[i], (uint64_t)i * 1000003 + sz[i]);
        EXPECT(off == (size_t)-1, "block %d (%zu bytes at %p) changed at byte %zu", i, sz[i], (void *)b[i], off);
        free(b[i]);
        b[i] = NULL;
    }
    return true;
}

static bool big_alignments(void) {
    for (size_t a = MiB; a <= 64 * MiB; a *= 2) {
        size_t sizes[] = {16, a / 2, a + 1};
        for (int i = 0; i < 3; i++) {
            size_t n = sizes[i];
            void *x = NULL;
            int r = posix_memalign(&x, a, n);
            void *y = aligned_alloc(a, n);
            void *z = memalign(a, n);
            EXPECT(r == 0 && x && y && z, "alignment %zu, size %zu: posix_memalign %d %p, aligned_alloc %p, memalign %p",
                   a, n, r, x, y, z);
            EXPECT(aligned_to(x, a) && aligned_to(y, a) && aligned_to(z, a),
                   "alignment %zu, size %zu: %p %p %p not all aligned", a, n, x, y, z);
            EXPECT(usable(x) >= n && usable(y) >= n && usable(z) >= n, "alignment %zu, size %zu: usable %zu %zu %zu", a,
                   n, usable(x), usable(y), usable(z));
            if (!touch(x, n, "posix_memalign block") || !touch(y, n, "aligned_alloc block") ||
                !touch(z, n, "memalign block"))
                return false;
            free(x);
            free(y);
            free(z);
        }
    }
    errno = 0;
    void *p = aligned_alloc(Z(SIZE_MAX / 2 + 1), 16);
    EXPECT(p == NULL && (errno == ENOMEM || errno == EINVAL), "aligned_alloc(2^63, 16) = %p, errno %d", p, errno);
    return true;
}

static bool mallopt_returns_1(void) {
    int r1 = mallopt(M_TRIM_THRESHOLD, 256 * 1024);
    int r2 = mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    int r3 = mallopt(M_ARENA_MAX, 8);
    int r4 = mallopt(M_MXFAST, 64);
    EXPECT(r1 == 1 && r2 == 1 && r3 == 1 && r4 == 1, "mallopt returned %d %d %d %d", r1, r2, r3, r4);
    void *p = malloc(100);
    EXPECT(p, "malloc after mallopt returned NULL");
    free(p);
    return true;
}

static bool malloc_trim_works(void) {
    enum { N = 512 };
    static void *b[N];
    for (int i = 0; i < N; i++) b[i] = malloc(i % 4 == 0 ? 300 * KiB : 8 * KiB);
    for (int i = 0; i < N; i++) memset(b[i], 1, i % 4 == 0 ? 300 * KiB : 8 * KiB);
    for (int i = 0; i < N; i++) free(b[i]);
    int r = malloc_trim(0);
    /* glibc returns 1 only if it released memory; mallard always returns 1. */
    EXPECT(r == 1 || (!mallard && r == 0), "malloc_trim(0) returned %d", r);
    void *p = malloc(100);
    EXPECT(p, "malloc after malloc_trim returned NULL");
    free(p);
    return true;
}

static bool mallinfo2_grows(void) {
    enum { N = 10240 };
    static void *b[N];
    struct mallinfo2 m0 = mallinfo2();
    struct mallinfo o0 = mallinfo();
    for (int i = 0; i < N; i++) {
        b[i] = malloc(KiB);
        EXPECT(b[i], "malloc(1 KiB) returned NULL");
        memset(b[i], 3, KiB);
    }
    struct mallinfo2 m1 = mallinfo2();
    struct mallinfo o1 = mallinfo();
    EXPECT(m1.uordblks >= m0.uordblks + 10 * MiB, "mallinfo2().uordblks went from %zu to %zu with 10 MiB more live",
           m0.uordblks, m1.uordblks);
    EXPECT((long)o1.uordblks >= (long)o0.uordblks + 10 * (long)MiB,
           "mallinfo().uordblks went from %d to %d with 10 MiB more live", o0.uordblks, o1.uordblks);
    for (int i = 0; i < N; i++) free(b[i]);
    if (mallard) {
        /* One block of 10 MiB (mallard counts huge blocks in uordblks; glibc only in hblkhd). */
        struct mallinfo2 h0 = mallinfo2();
        void *p = malloc(10 * MiB);
        EXPECT(p, "malloc(10 MiB) returned NULL");
        struct mallinfo2 h1 = mallinfo2();
        EXPECT(h1.uordblks >= h0.uordblks + 10 * MiB, "uordblks went from %zu to %zu with a 10 MiB block live",
               h0.uordblks, h1.uordblks);
        EXPECT(h1.hblks >= h0.hblks + 1 && h1.hblkhd >= h0.hblkhd + 10 * MiB, "hblks %zu -> %zu, hblkhd %zu -> %zu",
               h0.hblks, h1.hblks, h0.hblkhd, h1.hblkhd);
        free(p);
    }
    return true;
}

/* Runs f with stderr going into a memory file and returns what it wrote (static buffer). */
static const char *capture_stderr(void (*f)(void)) {
    static char buf[256 * 1024];
    fflush(stderr);
    int mem = memfd_create("stderr", 0), saved = dup(2);
    if (mem < 0 || saved < 0) return "(cannot capture stderr)";
    dup2(mem, 2);
    f();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(mem, buf, sizeof buf - 1, 0);
    close(mem);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static void call_malloc_stats(void) { malloc_stats(); }
static void call_mallard_stats_print(void) { m_stats_print(); }

static bool malloc_stats_prints(void) {
    const char *out = capture_stderr(call_malloc_stats);
    EXPECT(strlen(out) > 0, "malloc_stats() printed nothing to stderr");
    if (mallard) {
        EXPECT(strstr(out, "mallard"), "malloc_stats() output has no \"mallard\": %.200s", out);
        out = capture_stderr(call_mallard_stats_print);
        EXPECT(strstr(out, "mallard statistics"), "mallard_stats_print() output: %.200s", out);
    }
    return true;
}

static void *alloc_in_thread(void *arg) {
    void **blocks = arg;
    for (int i = 0; i < 1000; i++) {
        blocks[i] = malloc(16 + (size_t)i % 500);
        fill_pattern(blocks[i], 16 + (size_t)i % 500, (uint64_t)i);
    }
    return NULL;
}

static bool cross_thread_free(void) {
    static void *blocks[1000];
    struct mallard_stats s0 = {0}, s1 = {0};
    if (mallard) m_stats(&s0);
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, alloc_in_thread, blocks) == 0, "pthread_create failed");
    pthread_join(t, NULL);
    for (int i = 0; i < 1000; i++) {
        size_t off = check_pattern(blocks[i], 16 + (size_t)i % 500, (uint64_t)i);
        EXPECT(off == (size_t)-1, "block %d from an exited thread changed at byte %zu", i, off);
        free(blocks[i]);
    }
    if (mallard) {
        m_stats(&s1);
        EXPECT(s1.remote_frees >= s0.remote_frees + 1000, "remote_frees went from %lld to %lld after 1000 remote frees",
               (long long)s0.remote_frees, (long long)s1.remote_frees);
    }
    return true;
}

static bool mallard_api(void) {
    /* The struct is 13 int64_t fields: nothing after them is written. */
    unsigned char raw[sizeof(struct mallard_stats) + 64];
    memset(raw, 0xee, sizeof raw);
    m_stats((struct mallard_stats *)(void *)raw);
    for (size_t i = sizeof(struct mallard_stats); i < sizeof raw; i++)
        EXPECT(raw[i] == 0xee, "mallard_stats wrote byte %zu, past its 13 fields", i);
    m_stats(NULL);

    struct mallard_stats s0, s1, s2;
    m_stats(&s0);
    EXPECT(s0.segments >= 1 && s0.heaps_created >= 1 && s0.mapped_bytes > 0 && s0.resident_bytes > 0,
           "implausible stats: segments %lld heaps %lld mapped %lld resident %lld", (long long)s0.segments,
           (long long)s0.heaps_created, (long long)s0.mapped_bytes, (long long)s0.resident_bytes);
    void *huge = malloc(64 * MiB), *large = malloc(MiB), *small = malloc(100);
    EXPECT(huge && large && small, "allocation failed");
    memset(huge, 1, 64 * MiB);
    m_stats(&s1);
    EXPECT(s1.huge_blocks == s0.huge_blocks + 1 && s1.huge_bytes >= s0.huge_bytes + (int64_t)(64 * MiB),
           "a 64 MiB block: huge_blocks %lld -> %lld, huge_bytes %lld -> %lld", (long long)s0.huge_blocks,
           (long long)s1.huge_blocks, (long long)s0.huge_bytes, (long long)s1.huge_bytes);
    EXPECT(s1.large_blocks == s0.large_blocks + 1 && s1.large_bytes >= s0.large_bytes + (int64_t)MiB,
           "a 1 MiB block: large_blocks %lld -> %lld, large_bytes %lld -> %lld", (long long)s0.large_blocks,
           (long long)s1.large_blocks, (long long)s0.large_bytes, (long long)s1.large_bytes);
    EXPECT(s1.live_bytes >= s0.live_bytes + (int64_t)(65 * MiB), "live_bytes %lld -> %lld with 65 MiB more live",
           (long long)s0.live_bytes, (long long)s1.live_bytes);
    EXPECT(s1.mapped_bytes >= s1.live_bytes, "mapped_bytes %lld < live_bytes %lld", (long long)s1.mapped_bytes,
           (long long)s1.live_bytes);
    EXPECT(s1.resident_bytes >= s0.resident_bytes + (int64_t)(32 * MiB), "resident_bytes %lld -> %lld after 64 MiB written",
           (long long)s0.resident_bytes, (long long)s1.resident_bytes);
    free(huge);
    free(large);
    free(small);
    m_stats(&s2);
    EXPECT(s2.live_bytes <= s0.live_bytes + (int64_t)(64 * KiB) && s2.huge_blocks == s0.huge_blocks &&
               s2.large_blocks == s0.large_blocks,
           "after the frees: live_bytes %lld (was %lld), huge_blocks %lld (was %lld), large_blocks %lld (was %lld)",
           (long long)s2.live_bytes, (long long)s0.live_bytes, (long long)s2.huge_blocks, (long long)s0.huge_blocks,
           (long long)s2.large_blocks, (long long)s0.large_blocks);
    /* Purge now: freed memory goes back to the OS. */
    m_set_purge_delay_ms(0);
    m_collect(true);
    struct mallard_stats s3;
    m_stats(&s3);
    m_set_purge_delay_ms(500);
    EXPECT(s3.bytes_purged > s2.bytes_purged || s3.mapped_bytes < s1.mapped_bytes,
           "mallard_collect(true) after freeing 65 MiB: bytes_purged %lld -> %lld, mapped %lld -> %lld",
           (long long)s2.bytes_purged, (long long)s3.bytes_purged, (long long)s1.mapped_bytes,
           (long long)s3.mapped_bytes);
    m_collect(false);
    EXPECT(m_usable_size(NULL) == 0, "mallard_usable_size(NULL) = %zu", m_usable_size(NULL));
    void *p = malloc(1000);
    EXPECT(p && m_usable_size(p) >= 1000, "mallard_usable_size(malloc(1000)) = %zu", m_usable_size(p));
    free(p);
    return true;
}

static bool libc_aliases(void) {
    unsigned char *a = __libc_malloc(100);
    unsigned char *b = __libc_calloc(10, 10);
    EXPECT(a && b, "__libc_malloc %p, __libc_calloc %p", (void *)a, (void *)b);
    for (int i = 0; i < 100; i++) EXPECT(b[i] == 0, "__libc_calloc byte %d is %d", i, b[i]);
    fill_pattern(a, 100, 5);
    a = __libc_realloc(a, 100000);
    EXPECT(a && check_pattern(a, 100, 5) == (size_t)-1, "__libc_realloc lost contents");
    void *m = __libc_memalign(256, 1000), *v = __libc_valloc(100), *pv = __libc_pvalloc(100);
    EXPECT(m && aligned_to(m, 256), "__libc_memalign(256) = %p", m);
    EXPECT(v && aligned_to(v, page), "__libc_valloc = %p", v);
    EXPECT(pv && aligned_to(pv, page) && usable(pv) >= page, "__libc_pvalloc = %p", pv);
    EXPECT(usable(a) >= 100000 && usable(m) >= 1000, "usable sizes %zu %zu", usable(a), usable(m));
    __libc_free(a);
    __libc_free(b);
    __libc_free(m);
    free(v);
    __libc_free(pv);
    __libc_free(NULL);
    return true;
}

/* free_sized, free_aligned_sized (C23) and cfree: glibc 2.36 lacks the first two and no
 * longer links the third, so they are looked up at run time. */
static bool c23_frees_and_cfree(void) {
    void (*f_sized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*f_aligned_sized)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    void (*f_cfree)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    EXPECT(f_sized && f_aligned_sized && f_cfree, "free_sized %p, free_aligned_sized %p, cfree %p not all found",
           (void *)f_sized, (void *)f_aligned_sized, (void *)f_cfree);
    for (int i = 0; i < 100; i++) {
        size_t n = 1 + (size_t)i * 997;
        void *p = malloc(n), *q = aligned_alloc(64, n), *r = malloc(n);
        EXPECT(p && q && r, "allocation failed");
        errno = 55;
        f_sized(p, n);
        f_aligned_sized(q, 64, n);
        f_cfree(r);
        EXPECT(errno == 55, "free_sized/free_aligned_sized/cfree changed errno to %d", errno);
    }
    f_sized(NULL, 0);
    f_aligned_sized(NULL, 64, 0);
    f_cfree(NULL);
    return true;
}

static bool served_by_mallard(void) {
    const char *names[] = {"malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
                           "memalign", "valloc", "pvalloc", "malloc_usable_size", "malloc_trim", "mallopt",
                           "mallinfo", "mallinfo2", "malloc_stats", "__libc_malloc", "__libc_free", "_Znwm",
                           "_ZdlPv", "mallard_stats"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        void *f = dlsym(RTLD_DEFAULT, names[i]);
        Dl_info info;
        EXPECT(f, "%s not found", names[i]);
        EXPECT(dladdr(f, &info) && info.dli_fname, "dladdr(%s) failed", names[i]);
        EXPECT(strstr(info.dli_fname, "libmallard"), "%s comes from %s, not libmallard", names[i], info.dli_fname);
    }
    return true;
}

int main(int argc, char **argv) {
    bool require = argc > 1 && strcmp(argv[1], "--require-mallard") == 0;
    page = (size_t)sysconf(_SC_PAGESIZE);
    m_collect = (void (*)(bool))dlsym(RTLD_DEFAULT, "mallard_collect");
    m_usable_size = (size_t(*)(const void *))dlsym(RTLD_DEFAULT, "mallard_usable_size");
    m_stats_print = (void (*)(void))dlsym(RTLD_DEFAULT, "mallard_stats_print");
    m_set_purge_delay_ms = (void (*)(uint64_t))dlsym(RTLD_DEFAULT, "mallard_set_purge_delay_ms");
    m_stats = (void (*)(struct mallard_stats *))dlsym(RTLD_DEFAULT, "mallard_stats");
    mallard = m_collect != NULL;
    if (mallard && !(m_usable_size && m_stats_print && m_set_purge_delay_ms && m_stats)) {
        printf("FAIL 0 mallard_collect is there but not the rest of mallard's API\n");
        return 1;
    }
    printf("# contract checks on %s\n", mallard ? "mallard" : "the default allocator (glibc)");
    if (require && !mallard) {
        printf("FAIL 0 --require-mallard: mallard_collect not found, mallard is not loaded\n");
        return 1;
    }
    double t0 = now_s();

    run("malloc(0), calloc(0, n), calloc(n, 0), realloc(NULL, 0) return unique freeable blocks",
        malloc_zero_unique, false);
    run("free(NULL) does nothing and keeps errno", free_null, false);
    run("realloc(NULL, n) and reallocarray(NULL, n, m) are malloc", realloc_null_is_malloc, false);
    run("realloc(p, 0) frees p and returns NULL, in every size range", realloc_zero_frees, false);
    run("calloc with n * size overflowing returns NULL with ENOMEM", calloc_overflow, false);
    run("reallocarray overflow returns NULL with ENOMEM and keeps the block", reallocarray_overflow, false);
    run("impossible sizes (SIZE_MAX, PTRDIFF_MAX + 1, 2^47) return NULL with ENOMEM", impossible_sizes, false);
    run("aligned allocations whose size rounded to the alignment overflows return NULL with ENOMEM",
        aligned_impossible_sizes, false);
    run("a failed realloc returns NULL with ENOMEM and keeps the block", realloc_failure_keeps_block, false);
    run("posix_memalign with a bad alignment returns EINVAL, keeps errno and *memptr", posix_memalign_einval,
        false);
    run("posix_memalign failing with ENOMEM keeps errno", posix_memalign_enomem_keeps_errno, true);
    run("posix_memalign aligns to every power of two up to 64 MiB", posix_memalign_ok, false);
    run("aligned_alloc with an alignment that is not a power of two is NULL with EINVAL", aligned_alloc_einval,
        true);
    run("aligned_alloc aligns to every power of two up to 64 MiB, any size", aligned_alloc_ok, false);
    run("memalign rounds an alignment up to a power of two; EINVAL if that overflows", memalign_rounds_up, false);
    run("valloc is page aligned; pvalloc is page aligned and rounds the size to pages", valloc_pvalloc, false);
    run("malloc_usable_size >= size, all of it writable, no overlap; (NULL) is 0", usable_size_all_writable, false);
    run("free keeps errno (small, large, 64 MiB blocks, and while purging)", free_keeps_errno, false);
    run("every malloc, calloc and realloc result is 16-aligned", alignment_16, false);
    run("calloc(1, 1 GiB) of fresh memory does not touch the pages (RSS)", calloc_fresh_untouched, false);
    run("calloc returns zeroed memory after a dirty block of the same size was freed", calloc_reused_is_zero, false);
    run("realloc keeps the contents through every size range up to 100 MiB and back", realloc_keeps_contents,
        false);
    run("20000 blocks keep their own contents through frees and reuse", many_blocks_integrity, false);
    run("alignments from 1 MiB to 64 MiB with posix_memalign, aligned_alloc, memalign", big_alignments, false);
    run("mallopt returns 1", mallopt_returns_1, false);
    run("malloc_trim returns 1", malloc_trim_works, false);
    run("mallinfo2 and mallinfo uordblks grow with 10 MiB more live", mallinfo2_grows, false);
    run("malloc_stats prints mallard's statistics to stderr", malloc_stats_prints, false);
    run("blocks of an exited thread are freed by another one (remote frees counted)", cross_thread_free, false);
    run("mallard_stats, mallard_collect, mallard_usable_size, mallard_set_purge_delay_ms", mallard_api, true);
    run("__libc_malloc, __libc_calloc, __libc_realloc, __libc_memalign, __libc_valloc, __libc_pvalloc, __libc_free",
        libc_aliases, false);
    run("free_sized, free_aligned_sized and cfree free their block and keep errno", c23_frees_and_cfree, true);
    if (require) run("every allocation function is libmallard's (dladdr)", served_by_mallard, false);

    printf("# %d checks, %d failed, %d skipped, %.2f s\n", number, failed, skipped, now_s() - t0);
    return failed ? 1 : 0;
}

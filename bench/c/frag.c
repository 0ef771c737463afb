/* The fragmentation case (issue 4): a heap of mixed small sizes, most of it freed in a
 * scattered pattern, then larger blocks. An allocator that can reuse the holes for the larger
 * blocks (coalescing) or give their memory back keeps its peak RSS low; one that cannot
 * grows. Prints "peak_rss_kib final_rss_kib" on stdout.
 *
 * usage: frag [small_mib=256] [keep_percent=10] [large_mib=128] [large_min=2048] [large_max=8192]
 *             [pause_ms=0]
 * pause_ms: the program does other work (sleeps) between the frees and the larger blocks, as a
 * long-running one would. Run once per allocator in its own process (bench/frag.sh). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
/* Sizes from lo to hi, skewed to the small end (as real heaps are). */
static size_t skewed(size_t lo, size_t hi) {
    uint64_t r = next();
    size_t span = hi - lo + 1;
    size_t a = r % span, b = (r >> 32) % span;
    return lo + (a < b ? a : b);
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2) res = 0;
        fclose(f);
    }
    return res * 4;
}

int main(int argc, char **argv) {
    size_t small_total = (size_t)(argc > 1 ? atol(argv[1]) : 256) << 20;
    int keep = argc > 2 ? atoi(argv[2]) : 10;
    size_t large_total = (size_t)(argc > 3 ? atol(argv[3]) : 128) << 20;
    size_t large_min = argc > 4 ? (size_t)atol(argv[4]) : 2048;
    size_t large_max = argc > 5 ? (size_t)atol(argv[5]) : 8192;
    long pause_ms = argc > 6 ? atol(argv[6]) : 0;

    size_t cap = small_total / 16 + 1, n = 0, bytes = 0;
    void **small = malloc(cap * sizeof *small);
    while (bytes < small_total && n < cap) {
        size_t s = skewed(16, 1024);
        char *p = malloc(s);
        if (!p) return 1;
        memset(p, (int)n, s);
        small[n++] = p;
        bytes += s;
    }
    /* Free most of it, scattered: each block survives with probability keep %. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (next() % 100 < (uint64_t)keep) {
            small[kept++] = small[i];
        } else {
            free(small[i]);
        }
    }
    if (pause_ms > 0) {
        struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Then larger blocks. */
    size_t lcap = large_total / large_min + 1, ln = 0;
    void **large = malloc(lcap * sizeof *large);
    bytes = 0;
    while (bytes < large_total && ln < lcap) {
        size_t s = skewed(large_min, large_max);
        char *p = malloc(s);
        if (!p) return 1;
        memset(p, (int)ln, s);
        large[ln++] = p;
        bytes += s;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%ld %ld\n", ru.ru_maxrss, rss_kib());
    for (size_t i = 0; i < kept; i++) free(small[i]);
    for (size_t i = 0; i < ln; i++) free(large[i]);
    free(small);
    free(large);
    return 0;
}

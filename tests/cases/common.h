/* Helpers shared by the C and C++ test programs of libmallard.so: byte patterns that depend on
 * a seed (so a block holding another block's bytes, or bytes shifted by a copy, is caught),
 * their verification with the exact first mismatch, a small PRNG, a clock, and the check that
 * mallard is loaded. Header-only. */
#ifndef MALLARD_TEST_COMMON_H
#define MALLARD_TEST_COMMON_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* xorshift64*: the per-thread PRNG (state must not be 0). */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* The pattern byte at offset i of a block with seed `seed`: every 8-byte word is
 * mix64(seed + word index), stored little-endian. */
static inline uint8_t pattern_byte(uint64_t seed, size_t i) {
    return (uint8_t)(mix64(seed + i / 8) >> (8 * (i % 8)));
}

static inline void fill_pattern(void *p, size_t n, uint64_t seed) {
    unsigned char *b = (unsigned char *)p;
    size_t words = n / 8;
    for (size_t w = 0; w < words; w++) {
        uint64_t v = mix64(seed + w);
        memcpy(b + 8 * w, &v, 8);
    }
    for (size_t i = 8 * words; i < n; i++) b[i] = pattern_byte(seed, i);
}

/* Returns the offset of the first byte of p[0..n) that differs from the pattern, or
 * (size_t)-1 when all match. */
static inline size_t check_pattern(const void *p, size_t n, uint64_t seed) {
    const unsigned char *b = (const unsigned char *)p;
    size_t words = n / 8;
    for (size_t w = 0; w < words; w++) {
        uint64_t v = mix64(seed + w), got;
        memcpy(&got, b + 8 * w, 8);
        if (got != v) {
            for (size_t i = 8 * w;; i++)
                if (b[i] != pattern_byte(seed, i)) return i;
        }
    }
    for (size_t i = 8 * words; i < n; i++)
        if (b[i] != pattern_byte(seed, i)) return i;
    return (size_t)-1;
}

static inline double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Hides a pointer's origin from the compiler, so that frees of deliberately bad pointers
 * compile without warnings and are not optimized on what the compiler knows. */
static inline void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* With MALLARD_TEST_REQUIRE=1 in the environment (the Rust tests set it when they preload the
 * library), exits with code 4 unless libmallard.so is loaded: a test that runs on another
 * allocator by mistake must not pass. */
static inline void require_mallard_if_asked(const char *program) {
    const char *v = getenv("MALLARD_TEST_REQUIRE");
    if (v && v[0] == '1' && !dlsym(RTLD_DEFAULT, "mallard_collect")) {
        fprintf(stderr, "%s: MALLARD_TEST_REQUIRE=1 but libmallard.so is not loaded\n", program);
        exit(4);
    }
}

#endif

/* Corrupts one metadata word that a block overflow or underflow can reach, with an 8-byte
 * pattern, then goes on using the heap: `corrupt_metadata WORD BYTE` (BYTE in hex).
 * Chunk heap (large blocks A, B, C, D side by side; B freed, so its header, links and footer
 * are live metadata between the live A and C):
 *   canary  the word after A's block (A's canary)       overflow from A
 *   size    B's size word                               overflow from A
 *   next    B's next link                               overflow from A
 *   prev    B's previous link                           overflow from A
 *   footer  B's footer (C's prev_size)                  underflow from C
 *   csize   C's size word                               underflow from C
 * then frees A and C (each coalesces with B) and allocates again.
 * Small blocks (48 bytes; every other one freed, so each live block is followed by a free one):
 *   link    the next (free) block's link word           overflow
 *   mark    the next (free) block's free-mark word      overflow
 * then allocates 4096 blocks of the size.
 * Run by crates/mallard-capi/tests/misuse_matrix.rs: mallard must abort with its one-line
 * report. Exit 3: the pattern equals the word (nothing corrupted); exit 66: malloc returned
 * overlapping blocks; exit 0: the corruption went unseen. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wuse-after-free"

static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* Writes 8 bytes of `byte` at `at`; exits 3 if that changes nothing. */
static void corrupt(char *at, int byte) {
    char pattern[8];
    memset(pattern, byte, 8);
    if (memcmp(at, pattern, 8) == 0) {
        printf("the word already holds the pattern\n");
        exit(3);
    }
    memcpy(launder(at), pattern, 8);
}

static int overlaps(char **got, int n, char *p, size_t size) {
    for (int j = 0; j < n; j++) {
        if (got[j] && p < got[j] + size && got[j] < p + size) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: corrupt_metadata WORD BYTE\n");
        return 2;
    }
    const char *word = argv[1];
    int byte = (int)strtol(argv[2], NULL, 16);
    if (strcmp(word, "link") == 0 || strcmp(word, "mark") == 0) {
        enum { SIZE = 48, N = 64 };
        char *blocks[N];
        for (int i = 0; i < N; i++) blocks[i] = malloc(SIZE);
        /* Past any quarantine: a thread's last 64 small frees wait there in the secure build. */
        for (int i = 0; i < 1024; i++) free(launder(malloc(4096)));
        char *live = NULL, *next = NULL;
        for (int i = 0; i < N; i++) {
            for (int j = 0; j < N; j++) {
                if (blocks[j] == blocks[i] + SIZE) live = blocks[i], next = blocks[j];
            }
        }
        if (!live) return 3;
        free(launder(next));
        for (int i = 0; i < N; i++) {
            if (blocks[i] == next) blocks[i] = NULL; /* free now: malloc may hand it out again */
        }
        for (int i = 0; i < 1024; i++) free(launder(malloc(4096)));
        corrupt(live + SIZE + (strcmp(word, "mark") == 0 ? 8 : 0), byte);
        char *got[64] = {0};
        for (int i = 0; i < 4096; i++) {
            char *p = malloc(SIZE);
            if (overlaps(got, 64, p, SIZE) || overlaps(blocks, N, p, SIZE)) {
                printf("malloc returned %p twice\n", (void *)p);
                return 66;
            }
            got[i % 64] = p;
        }
        printf("the corruption went unseen\n");
        return 0;
    }
    enum { SIZE = 256 * 1024 };
    char *a = malloc(SIZE), *b = malloc(SIZE), *c = malloc(SIZE), *d = malloc(SIZE);
    size_t usable = malloc_usable_size(a);
    if (b != a + usable + 16 || c != b + usable + 16) {
        printf("the blocks are not side by side\n");
        return 3;
    }
    free(launder(b));
    char *end_a = a + usable;
    if (strcmp(word, "canary") == 0) corrupt(end_a, byte);
    else if (strcmp(word, "size") == 0) corrupt(end_a + 8, byte);
    else if (strcmp(word, "next") == 0) corrupt(end_a + 16, byte);
    else if (strcmp(word, "prev") == 0) corrupt(end_a + 24, byte);
    else if (strcmp(word, "footer") == 0) corrupt(c - 16, byte);
    else if (strcmp(word, "csize") == 0) corrupt(c - 8, byte);
    else return 2;
    free(launder(a));
    free(launder(c));
    char *got[4];
    for (int i = 0; i < 4; i++) {
        got[i] = malloc(SIZE);
        if (got[i] && (overlaps(got, i, got[i], SIZE) || (got[i] < d + SIZE && d < got[i] + SIZE))) {
            printf("malloc returned overlapping blocks\n");
            return 66;
        }
    }
    printf("the corruption went unseen\n");
    return 0;
}

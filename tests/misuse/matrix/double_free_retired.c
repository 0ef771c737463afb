/* A double free after the block's page was retired: `double_free_retired KIND WHEN WHO`.
 * KIND: small (1 KiB blocks) or medium (16 KiB blocks). The program fills several pages of
 * the size, frees every block of one page (which then goes back to its segment), then
 * WHEN: retire (frees one of them again at once), purge (after malloc_trim gave the page's
 * memory back to the OS, so it reads as zero), reuse (after the page serves another size);
 * WHO: owner (the second free by the thread that allocated) or other (by another thread).
 * Run by crates/mallard-capi/tests/misuse_matrix.rs: mallard must abort with its one-line
 * report. Exit 3: the scenario was not reached; exit 66: blocks overlapped afterwards. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wuse-after-free"

static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

static void *victim;

static void *free_victim(void *arg) {
    (void)arg;
    free(launder(victim));
    return NULL;
}

enum { N = 256 };

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: double_free_retired small|medium retire|purge|reuse owner|other\n");
        return 2;
    }
    int medium = strcmp(argv[1], "medium") == 0;
    size_t size = medium ? 16384 : 1024, other_size = medium ? 24576 : 2048;
    unsigned shift = medium ? 19 : 16; /* a page's blocks share address >> shift */
    static char *blocks[N];
    for (int i = 0; i < N; i++) blocks[i] = malloc(size);
    static char *flush[64];
    for (int i = 0; i < 64; i++) flush[i] = malloc(size);
    uintptr_t page = (uintptr_t)blocks[N / 2] >> shift;
    char *first = NULL, *second = NULL; /* the page's two lowest blocks */
    for (int i = 0; i < N; i++) {
        if ((uintptr_t)blocks[i] >> shift != page) continue;
        if (!first || blocks[i] < first) second = first, first = blocks[i];
        else if (!second || blocks[i] < second) second = blocks[i];
    }
    for (int i = 0; i < N; i++) {
        if ((uintptr_t)blocks[i] >> shift == page) {
            free(launder(blocks[i]));
            blocks[i] = NULL;
        }
    }
    /* Past any quarantine (the secure build keeps a thread's last 64 small frees), so the
     * page really empties: 64 more frees of blocks of other pages. */
    for (int i = 0; i < 64; i++) free(launder(flush[i]));
    /* The second block: at an odd multiple of the size, so it is inside a block of the
     * larger size when the page is reused (never the start of a live one). */
    victim = second;
    if (strcmp(argv[2], "purge") == 0) {
        malloc_trim(0);
    } else if (strcmp(argv[2], "reuse") == 0) {
        int reused = 0;
        for (int i = 0; i < 64 && !reused; i++) {
            char *q = malloc(other_size);
            reused = ((uintptr_t)q >> shift == page);
        }
        if (!reused) {
            printf("the page was not reused\n");
            return 3;
        }
    }
    if (strcmp(argv[3], "other") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, free_victim, NULL);
        pthread_join(t, NULL);
    } else {
        free(launder(victim));
    }
    /* Not caught: does the heap now hand out a block twice? */
    for (int i = 0; i < N; i++) {
        char *p = malloc(size);
        for (int j = 0; j < N; j++) {
            if (blocks[j] && p < blocks[j] + size && blocks[j] < p + size) {
                printf("malloc returned %p, overlapping %p\n", (void *)p, (void *)blocks[j]);
                return 66;
            }
        }
        if (!blocks[i]) blocks[i] = p;
    }
    printf("the double free went unseen\n");
    return 0;
}

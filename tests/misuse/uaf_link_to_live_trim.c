// outcome glibc: crash
// outcome mallard: abort "free list corrupted"
// outcome mallard-secure: abort "free list corrupted"
/* A use-after-free write of a free-list link to a block that is still live, then malloc_trim:
 * giving back free memory walks the free lists, and must not take the live block for a free
 * one (its memory would be given back and the block handed out again). */
#include "misuse.h"
#include <malloc.h>

int main(void) {
    enum { N = 512, SIZE = 64 };
    static char *a[N];
    for (int i = 0; i < N; i++) a[i] = malloc(SIZE);
    char *live = a[N / 2];
    memset(live, 0x5a, SIZE);
    for (int i = 0; i < N; i++) {
        if (a[i] != live) free(launder(a[i]));
    }
    flush_quarantine();
    /* Every freed block's first word is its link: make each lead to the live block. */
    for (int i = 0; i < N; i++) {
        if (a[i] != live) *(char **)launder(a[i]) = live;
    }
    malloc_trim(0);
    hunt(SIZE, 4096);
    for (int i = 0; i < SIZE; i++) {
        if (live[i] != 0x5a) {
            printf("the live block changed\n");
            return EXPLOITED;
        }
    }
    return 0;
}

// outcome glibc: crash
// outcome mallard: abort "free list corrupted"
// outcome mallard-secure: abort "free list corrupted"
/* A use-after-free write that links a freed block to itself, then malloc_trim: a walk along
 * the free list meets a cycle and must report it, not loop for ever. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
    enum { N = 512, SIZE = 64 };
    static char *a[N];
    for (int i = 0; i < N; i++) a[i] = malloc(SIZE);
    /* (a[0] stays live, so that its page stays in use and keeps its free lists.) */
    for (int i = 1; i < N; i++) free(launder(a[i]));
    flush_quarantine();
    for (int i = 1; i < N; i++) *(char **)launder(a[i]) = a[i];
    malloc_trim(0);
    hunt(SIZE, 4096);
    return 0;
}

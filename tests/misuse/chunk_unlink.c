// outcome glibc: abort "corrupted double-linked list"
// outcome mallard: abort "chunk free list corrupted"
// outcome mallard-secure: abort "chunk free list corrupted"
/* An unsafe unlink: the program frees a large block, overwrites its two free-list links after
 * the free (a use after free), and frees its neighbour, so that the coalesce takes the block
 * off its list and writes one link through the other: a write of a value of the attacker's
 * choice to an address of its choice. Allocators check that the neighbours on the list point
 * back at the block first (glibc since 2004). */
#include "misuse.h"

int main(void) {
    /* 100 KiB: glibc's heap (below its mmap threshold), mallard's chunk heap. */
    enum { SIZE = 100 * 1024 };
    char *a = malloc(SIZE), *b = malloc(SIZE), *guard = malloc(SIZE);
    free(launder(a)); /* (chunks wait in no quarantine) */
    /* The links as mallard (and glibc) keep them: next at a[0], previous at a[1]. Unlinking
     * `a` writes `prev` into next's previous-link word, 24 bytes into the next chunk. */
    void **link = launder(a);
    link[0] = target - 24; /* "next": its prev word is target[0..8] */
    link[1] = (void *)0x4142434445464748;
    free(launder(b)); /* coalesces with a: unlinks it */
    if (*(void **)target == (void *)0x4142434445464748) {
        printf("the unlink wrote to the chosen address\n");
        return EXPLOITED;
    }
    hunt(SIZE, 4);
    free(guard);
    return 0;
}

// outcome glibc: abort "free(): invalid pointer"
// outcome mallard: abort "free of a block that was never allocated"
// outcome mallard-secure: abort "free of a block that was never allocated"
/* free of an address 16 KiB past a fresh 16-byte block: where a block of its size class would
 * start in the same page, but one that was never handed out. Accepting it would put the block
 * on the free list while later carving hands it out again: two owners of one block. */
#include "misuse.h"

int main(void) {
    char *p = malloc(16);
    free(launder(p + 16384));
    hunt(16, 4096);
    return 0;
}

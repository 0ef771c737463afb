// outcome glibc: abort "double free or corruption"
// outcome mallard: abort "double free"
// outcome mallard-secure: abort "double free"
/* free of the block two slots after a fresh 16-byte block: carved, free, but never handed
 * out. Freeing it again would put it on the free list twice (mallard reports it as the
 * double free it would be: a free block carries the free mark). */
#include "misuse.h"

int main(void) {
    char *p = malloc(16);
    free(launder(p + 32));
    hunt(16, 4096);
    return 0;
}

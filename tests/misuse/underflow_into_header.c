// outcome glibc: abort "double free or corruption"
// outcome mallard: abort "corrupted chunk header"
// outcome mallard-secure: abort "corrupted chunk header"
/* A heap underflow: the program writes 8 bytes before a large block, where a chunk's header
 * keeps its size, then frees the block. Trusting the size would let the allocator hand out
 * memory past the chunk. */
#include "misuse.h"

int main(void) {
    char *p = malloc(600 * 1024);
    memset(p, 0, 600 * 1024);
    ((size_t *)launder(p))[-1] = 64 << 20; /* a size far beyond the chunk */
    free(p);
    hunt(600 * 1024, 4);
    return 0;
}

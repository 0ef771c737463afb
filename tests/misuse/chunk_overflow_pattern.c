// outcome glibc: harmless
// outcome mallard: abort "free of a block written past its end"
// outcome mallard-secure: abort "free of a block written past its end"
/* A heap overflow of 16 bytes of 0x41 past a large block, over the next block's header (in
 * mallard: a canary and the size word), then a free of the block. Every word an overflow
 * reaches is checked before it is used: a report, not a crash or a panic. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
    enum { SIZE = 256 * 1024 };
    char *a = malloc(SIZE), *b = malloc(SIZE), *guard = malloc(SIZE);
    memset(launder(a) + malloc_usable_size(a), 0x41, 16);
    free(launder(a));
    hunt(SIZE, 4);
    free(b);
    free(guard);
    return 0;
}

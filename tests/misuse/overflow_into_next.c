// outcome glibc: abort "malloc(): corrupted top size"
// outcome mallard: abort "free list corrupted"
// outcome mallard-secure: abort "free list corrupted"
// outcome mallard-secure-full: harmless
/* A heap overflow: writing past the end of a block into the next one, which is free, so the
 * overflow lands on the allocator's link (in glibc: the next chunk's header and link). (At the
 * secure build's full level the block is 8 bytes larger, for its canary: the 16 bytes land on
 * its own slack and canary, which only a free of it would check.) */
#include "misuse.h"

int main(void) {
    char *blocks[16];
    for (int i = 0; i < 16; i++) blocks[i] = malloc(48);
    for (int i = 1; i < 16; i += 2) free(blocks[i]);
    flush_quarantine(); /* the freed blocks are on the free lists */
    for (int i = 0; i < 16; i += 2) {
        /* 48 bytes of data, then 16 more: the start of whatever follows. */
        void *fake[8] = {target, target, target, target, target, target, target, target};
        memcpy(launder(blocks[i]) + 48, fake, 16);
    }
    hunt(48, 4096);
    return 0;
}

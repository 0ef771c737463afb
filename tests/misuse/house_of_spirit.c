// outcome glibc: exploited
// outcome mallard: abort "free of a pointer mallard did not allocate"
// outcome mallard-secure: abort "free of a pointer mallard did not allocate"
/* House of spirit: the program builds a fake chunk header in memory it controls and frees the
 * address after it. An allocator that trusts the header takes the memory into its lists and
 * hands it out later. */
#include "misuse.h"

int main(void) {
    size_t *fake = (size_t *)target;
    fake[0] = 0;    /* prev_size */
    fake[1] = 0x40; /* size 64, in use */
    fake[8] = 0;    /* the next chunk's prev_size */
    fake[9] = 0x40; /* and its size, plausible */
    free(launder(&fake[2]));
    hunt(0x30, 8);
    return 0;
}

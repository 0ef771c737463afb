// outcome glibc: harmless
// outcome mallard: harmless
// outcome mallard-secure: segv
/* A heap overflow out of a huge block: one byte written just past the end of an 8 MiB block
 * (a whole number of pages), where the mapping goes on with the allocator's rounding. */
#include "misuse.h"

int main(void) {
    size_t n = 8 << 20;
    char *p = malloc(n);
    memset(p, 1, n);
    ((char *)launder(p))[n] = 2;
    free(p);
    return 0;
}

// outcome glibc: harmless
// outcome mallard: harmless
// outcome mallard-secure: harmless
// outcome mallard-secure-full: abort "write to a freed block"
/* A use-after-free write of data: the program fills part of a block after freeing it (not the
 * allocator's link), then goes on freeing. Nothing breaks at once; the secure build finds the
 * write when the block leaves its quarantine. */
#include "misuse.h"

int main(void) {
    char *a = malloc(48), *keep = malloc(48);
    free(a);
    memset(launder(a) + 16, 'x', 16);
    flush_quarantine();
    free(keep);
    return 0;
}

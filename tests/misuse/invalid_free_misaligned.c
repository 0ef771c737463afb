// outcome glibc: abort "free(): invalid pointer"
// outcome mallard: abort "free of a pointer inside a block"
// outcome mallard-secure: abort "free of a pointer inside a block"
/* free of a pointer one byte into a live block: no block starts there. */
#include "misuse.h"

int main(void) {
    char *p = malloc(64);
    memset(p, 0, 64);
    free(launder(p + 1));
    return 0;
}

// outcome glibc: abort "free(): invalid pointer"
// outcome mallard: abort "free of a pointer inside a block"
// outcome mallard-secure: abort "free of a pointer inside a block"
/* free of a pointer 16 bytes into a live block. */
#include "misuse.h"

int main(void) {
    char *p = malloc(64);
    memset(p, 0, 64);
    free(launder(p + 16));
    hunt(64, 8);
    return 0;
}

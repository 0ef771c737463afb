// outcome glibc: segv
// outcome mallard: abort "double free"
// outcome mallard-secure: abort "double free"
/* A 1 MiB block (mallard's chunk heap; glibc maps it) freed twice. */
#include "misuse.h"

int main(void) {
    void *p = malloc(1 << 20);
    memset(p, 1, 1 << 20);
    free(p);
    free(launder(p));
    return 0;
}

// outcome glibc: abort "free(): double free detected"
// outcome mallard: abort "double free"
// outcome mallard-secure: abort "double free"
/* The simplest double free: a small block freed twice in a row. */
#include "misuse.h"

int main(void) {
    void *p = malloc(32);
    memset(p, 1, 32);
    free(p);
    free(launder(p));
    return 0;
}

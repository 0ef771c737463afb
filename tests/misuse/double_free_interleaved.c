// outcome glibc: abort "free(): double free detected"
// outcome mallard: abort "double free"
// outcome mallard-secure: abort "double free"
/* The fastbin-dup shape: a, b, a. A check that only compares with the last block freed
 * misses it, and the list then hands out `a` twice. */
#include "misuse.h"

int main(void) {
    void *a = malloc(32), *b = malloc(32);
    free(a);
    free(b);
    free(launder(a));
    hunt(32, 8);
    return 0;
}

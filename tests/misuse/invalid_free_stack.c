// outcome glibc: abort "free(): invalid pointer"
// outcome mallard: abort "free of a pointer mallard did not allocate"
// outcome mallard-secure: abort "free of a pointer mallard did not allocate"
/* free of a stack address. */
#include "misuse.h"

int main(void) {
    char local[64] __attribute__((aligned(16)));
    memset(local, 0, sizeof local);
    free(launder(local + 16));
    return 0;
}

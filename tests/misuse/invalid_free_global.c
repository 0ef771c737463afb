// outcome glibc: abort "free(): invalid pointer"
// outcome mallard: abort "free of a pointer mallard did not allocate"
// outcome mallard-secure: abort "free of a pointer mallard did not allocate"
/* free of an address in the program's data. */
#include "misuse.h"

int main(void) {
    free(launder(target + 16));
    return 0;
}

// outcome glibc: harmless
// outcome mallard: abort "malloc_usable_size of a block that was never allocated"
// outcome mallard-secure: abort "malloc_usable_size of a block that was never allocated"
/* malloc_usable_size of an address 16 KiB past a fresh 16-byte block, where no block was ever
 * handed out. A size for it would tell the program it may write there. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
    char *p = malloc(16);
    size_t n = malloc_usable_size(launder(p + 16384));
    printf("usable size %zu\n", n);
    return 0;
}

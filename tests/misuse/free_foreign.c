// outcome glibc: harmless
// outcome mallard: abort "free of a pointer mallard did not allocate"
// outcome mallard-secure: abort "free of a pointer mallard did not allocate"
/* free of a block another allocator handed out: here memory from mmap with a header laid out
 * as glibc lays out its own (size with the "mapped" bit). */
#include "misuse.h"
#include <sys/mman.h>

int main(void) {
    size_t *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 2;
    m[0] = 0;
    m[1] = (1 << 16) | 2; /* size 64 KiB, IS_MMAPPED */
    free(launder(&m[2]));
    return 0;
}

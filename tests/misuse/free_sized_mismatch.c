// outcome glibc: harmless
// outcome mallard: abort "free_sized of a block allocated with another size"
// outcome mallard-secure: abort "free_sized of a block allocated with another size"
/* free_sized (C23) with a size the block was not allocated with: a 24-byte block freed as 200
 * bytes. The allocator must not trust the size (glibc 2.36 has no free_sized: plain free). */
#include "misuse.h"
#include <dlfcn.h>

int main(void) {
    void (*free_sized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void *p = malloc(24);
    if (free_sized) {
        free_sized(launder(p), 200);
    } else {
        free(p);
    }
    return 0;
}

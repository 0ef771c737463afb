// outcome glibc: harmless
// outcome mallard: abort "aligned delete of a block allocated with another alignment"
// outcome mallard-secure: abort "aligned delete of a block allocated with another alignment"
/* C++ aligned delete with an alignment the object was not allocated with: a block from plain
 * operator new (16-aligned) deleted as if it were 4096-aligned. */
#include "misuse.h"
#include <dlfcn.h>

int main(void) {
    void *(*op_new)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
    void (*op_delete)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvSt11align_val_t");
    if (!op_new || !op_delete) {
        free(malloc(48));
        return 0;
    }
    void *p = op_new(48);
    if ((size_t)p % 4096 == 0) p = op_new(48); /* (one that is not 4096-aligned by chance) */
    op_delete(launder(p), 4096);
    return 0;
}

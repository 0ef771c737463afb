// outcome glibc: harmless
// outcome mallard: abort "sized delete of a block allocated with another size"
// outcome mallard-secure: abort "sized delete of a block allocated with another size"
/* C++ sized delete of an object through a base class without a virtual destructor: 48 bytes
 * allocated by operator new, deleted as 16. (Called as the C++ runtime would, by its mangled
 * name; without libstdc++ loaded, as under plain glibc, it is a plain free.) */
#include "misuse.h"
#include <dlfcn.h>

int main(void) {
    void *(*op_new)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
    void (*op_delete)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvm");
    if (!op_new || !op_delete) {
        free(malloc(48));
        return 0;
    }
    void *p = op_new(48);
    op_delete(launder(p), 16);
    return 0;
}

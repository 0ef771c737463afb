// A C program (no libstdc++ at start-up) that loads C++ code with dlopen, privately
// (RTLD_LOCAL), and has it run out of memory: operator new must still throw std::bad_alloc
// and call the new_handler, as it does without mallard. argv[1]: the plugin's path.
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    int (*try_new)(void) = (int (*)(void))dlsym(h, "plugin_try_new");
    int (*try_handler)(void) = (int (*)(void))dlsym(h, "plugin_try_new_with_handler");
    if (try_new == NULL || try_handler == NULL) return 2;
    int a = try_new();
    int b = try_handler();
    printf("plugin_try_new=%d plugin_try_new_with_handler=%d\n", a, b);
    return a == 2 && b == 11 ? 0 : 1;
}

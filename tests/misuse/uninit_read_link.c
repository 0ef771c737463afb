// outcome glibc: exploited
// outcome mallard: harmless
// outcome mallard-secure: harmless
/* An uninitialised read: the program frees small blocks and reads the first two words of the
 * blocks malloc hands out next, where a free list keeps its link (a heap address, or in an
 * encoded form a key). A fresh block must show neither. */
#include "misuse.h"

int main(void) {
    enum { N = 64 };
    void *p[N];
    for (int i = 0; i < N; i++) p[i] = malloc(64);
    for (int i = 0; i < N; i++) free(p[i]);
    flush_quarantine();
    for (int i = 0; i < N; i++) {
        size_t *q = launder(malloc(64));
        if (q[0] != 0 || q[1] != 0) {
            printf("a fresh block holds %#zx %#zx\n", q[0], q[1]);
            return EXPLOITED;
        }
    }
    return 0;
}

// outcome glibc: harmless
// outcome mallard: abort "corrupted chunk header"
// outcome mallard-secure: abort "corrupted chunk header"
/* A heap overflow into the next block's header: the program sets the "free" bit in the size
 * word of the live large block after its own (skipping the word in between), then frees its
 * block. Trusting the bit, the free would coalesce with the live neighbour, and a later malloc
 * would return memory overlapping it. */
#include "misuse.h"
#include <malloc.h>

int main(void) {
    enum { SIZE = 256 * 1024 };
    char *a = malloc(SIZE), *b = malloc(SIZE), *guard = malloc(SIZE);
    memset(b, 0x5a, SIZE);
    /* b's size word is the 8 bytes before it (mallard's chunks and glibc's chunks alike). */
    size_t *size_word = (size_t *)launder(b) - 1;
    *size_word |= 1;
    free(launder(a));
    char *c = malloc(2 * SIZE);
    if (c && c < b + SIZE && b < c + 2 * SIZE) {
        printf("malloc returned %p, overlapping the live block %p\n", (void *)c, (void *)b);
        return EXPLOITED;
    }
    free(guard);
    return 0;
}

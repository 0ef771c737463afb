// outcome glibc: abort "double free or corruption"
// outcome mallard: abort "free of a pointer that is not a block"
// outcome mallard-secure: abort "free of a pointer that is not a block"
/* A free, by another thread, of a pointer 64 bytes into a live large block. The freeing thread
 * does not own the block's memory, so it only hands the block to its owner for later: that
 * must not write into the live block, and the misuse must be reported at once. */
#include "misuse.h"
#include <pthread.h>

static char *block;

static void *other(void *arg) {
    (void)arg;
    free(launder(block + 64));
    return NULL;
}

int main(void) {
    enum { SIZE = 200000 };
    block = malloc(SIZE);
    memset(block, 'A', SIZE);
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    pthread_join(t, NULL);
    for (int i = 0; i < SIZE; i++) {
        if (block[i] != 'A') {
            printf("byte %d of the live block changed\n", i);
            return EXPLOITED;
        }
    }
    return 0;
}

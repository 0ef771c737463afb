// outcome glibc: segv
// outcome mallard: abort "double free"
// outcome mallard-secure: abort "double free"
/* A large block freed twice by a thread that does not own it (its owner allocates nothing more
 * for a while, so it does not free it yet): the second free must be caught at once, not only
 * when the owner gets to the block. */
#include "misuse.h"
#include <pthread.h>

static char *block;

static void *other(void *arg) {
    (void)arg;
    free(launder(block));
    free(launder(block));
    return NULL;
}

int main(void) {
    block = malloc(200000);
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    pthread_join(t, NULL);
    return 0;
}

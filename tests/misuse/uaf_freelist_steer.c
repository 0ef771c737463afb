// outcome glibc: crash
// outcome mallard: abort "free list corrupted"
// outcome mallard-secure: abort "free list corrupted"
/* A use-after-free write: the program writes into a block it freed, where the allocator keeps
 * its free-list link, the address it wants malloc to return. Without encoded links the
 * allocator follows it. (The blocks are freed long enough ago to have left any quarantine.) */
#include "misuse.h"

int main(void) {
    void *a = malloc(48), *b = malloc(48);
    free(b);
    free(a);
    flush_quarantine();
    *(void **)launder(a) = target; /* the link word of a freed block */
    *(void **)launder(b) = target;
    hunt(48, 4096);
    return 0;
}

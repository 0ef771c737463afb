// outcome glibc: crash
// outcome mallard: abort "double free"
// outcome mallard-secure: abort "double free"
/* free of a block of a fresh page that was carved (the allocator prepared it, free) but never
 * handed out. Freeing it would put it on the free list twice (mallard reports it as the double
 * free it would be: a free block carries the free mark). */
#include "misuse.h"

int main(void) {
    /* A size nothing allocates before main: a fresh page, whose first 4 KiB are carved at once,
     * in the secure build in a random order. q is one of them other than p. */
    enum { SIZE = 176 };
    char *p = malloc(SIZE);
    char *page = (char *)((uintptr_t)p & ~(uintptr_t)0xffff);
    char *q = p == page ? page + SIZE : page;
    free(launder(q));
    hunt(SIZE, 4096);
    return 0;
}

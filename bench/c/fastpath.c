/* Fast-path cost through the C ABI: `fastpath N` does N malloc(32)+free pairs with one other
 * block of the class live (so the page never empties). Run under callgrind with LD_PRELOAD by
 * bench/callgrind-fastpath.sh. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    void *keep = malloc(32);
    for (long i = 0; i < n; i++) {
        void *volatile p = malloc(32);
        free(p);
    }
    free(keep);
    return 0;
}

/* include/mallard.h compiles cleanly (as C and as C++) and every function it declares links
 * and works when the program is linked with -lmallard. Prints "ok" and exits 0. */
#include "mallard.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            return 1;                                                     \
        }                                                                 \
    } while (0)

int main(void) {
    struct mallard_stats before, after;
    mallard_stats(&before);
    mallard_stats(NULL); /* allowed */
    enum { N = 1000 };
    static void *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(1000);
        CHECK(blocks[i] != NULL);
        memset(blocks[i], i & 0xff, 1000);
        CHECK(mallard_usable_size(blocks[i]) >= 1000);
    }
    void *huge = malloc(64 << 20);
    CHECK(huge != NULL);
    mallard_stats(&after);
    CHECK(after.live_bytes >= before.live_bytes + N * 1000 + (64 << 20));
    CHECK(after.huge_blocks >= before.huge_blocks + 1);
    CHECK(after.segments >= 1 && after.mapped_bytes > 0 && after.heaps_created >= 1);
    CHECK(mallard_usable_size(NULL) == 0);
    for (int i = 0; i < N; i++) free(blocks[i]);
    free(huge);
    mallard_set_purge_delay_ms(0);
    CHECK(mallopt(M_MALLARD_PURGE_DELAY, 0) == 1);
    CHECK(mallopt(M_MALLARD_PURGE_DELAY, -1) == 0);
    mallard_collect(true);
    mallard_stats(&after);
    CHECK(after.live_bytes < before.live_bytes + 4096);
    mallard_stats_print();
    puts("ok");
    return 0;
}

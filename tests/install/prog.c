/* Built against an installed mallard with pkg-config (scripts/test-install): checks that the
 * program's malloc is mallard's and that mallard.h's functions link. Exit 0 on success. */
#include <mallard.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    enum { N = 1000 };
    static char *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(24 + (size_t)i * 40);
        if (!blocks[i]) return 1;
        memset(blocks[i], i & 0xff, 24 + (size_t)i * 40);
    }
    struct mallard_stats s;
    mallard_stats(&s);
    /* mallard_usable_size aborts on a block that is not mallard's: this one must be. */
    size_t usable = mallard_usable_size(blocks[N - 1]);
    for (int i = 0; i < N; i++) free(blocks[i]);
    if (s.live_bytes < (int64_t)(N * 24) || usable < 24 + (size_t)(N - 1) * 40) {
        fprintf(stderr, "prog: mallard does not serve this program's malloc (live %lld, usable %zu)\n",
                (long long)s.live_bytes, usable);
        return 1;
    }
    printf("prog: ok, %lld live bytes at the peak of the test\n", (long long)s.live_bytes);
    return 0;
}

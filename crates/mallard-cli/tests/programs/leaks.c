/* For `mallard report`'s test: `leaky_function` makes 100 blocks that are never freed, and
 * `temp_user` 1000 blocks of 32 bytes, each freed at once by the same thread (a stack
 * candidate). Built with -O0 so that the compiler keeps the malloc/free pairs. */
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) void *leaky_function(void) { return malloc(48); }
__attribute__((noinline)) int temp_user(int i) { char *p = malloc(32); memset(p, i, 32); int r = p[3]; free(p); return r; }
int main(void) { static void *keep[100]; int s = 0; for (int i = 0; i < 100; i++) keep[i] = leaky_function(); for (int i = 0; i < 1000; i++) s += temp_user(i); return s == 12345; }

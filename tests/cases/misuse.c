/* Misuse that libmallard.so must catch: `misuse CASE` prints the pointer it is about to misuse
 * on stdout (`%p`), then frees or reallocs it. The allocator must print one line
 * `mallard: <what> at <pointer>` on stderr and abort; if the program gets past the misuse it
 * says so and exits 3. `misuse none` does nothing wrong and exits 0. */
#define _GNU_SOURCE
/* Using freed pointers is the point here. */
#pragma GCC diagnostic ignored "-Wuse-after-free"
#include "common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char global_buffer[256] __attribute__((aligned(64)));

static void show(void *p) {
    printf("%p\n", p);
    fflush(stdout);
}

static void *free_in_thread(void *p) {
    free(p);
    return NULL;
}

static pthread_barrier_t freed;
static void *owner_block;

/* Frees `p` (a remote free, which may wait in this thread's batch) and stays alive until main
 * has misused it. */
static void *free_and_stay(void *p) {
    free(p);
    pthread_barrier_wait(&freed);
    pthread_barrier_wait(&freed); /* never passed: main aborts first */
    return NULL;
}

/* Allocates and frees a block, then stays alive (its heap keeps the page) while main frees
 * the block again. */
static void *alloc_free_and_wait(void *arg) {
    (void)arg;
    owner_block = malloc(48);
    memset(owner_block, 1, 48);
    free(owner_block);
    pthread_barrier_wait(&freed);
    pause();
    return NULL;
}

int main(int argc, char **argv) {
    require_mallard_if_asked("misuse");
    if (argc != 2) {
        fprintf(stderr, "usage: misuse CASE\n");
        return 2;
    }
    const char *c = argv[1];
    /* Some blocks first, so the allocator is set up and the bad pointers are not the first. */
    void *warm[64];
    for (int i = 0; i < 64; i++) warm[i] = malloc(16 + (size_t)i * 100);

    if (!strcmp(c, "none")) {
        for (int i = 0; i < 64; i++) free(warm[i]);
        puts("no misuse");
        return 0;
    } else if (!strcmp(c, "free-stack")) {
        char local[64];
        memset(local, 0, sizeof local);
        void *p = launder(local + 16);
        show(p);
        free(p);
    } else if (!strcmp(c, "free-global")) {
        void *p = launder(global_buffer);
        show(p);
        free(p);
    } else if (!strcmp(c, "free-interior-small")) {
        char *b = malloc(64);
        memset(b, 0, 64);
        void *p = launder(b + 16);
        show(p);
        free(p);
    } else if (!strcmp(c, "free-interior-large")) {
        char *b = malloc(1 << 20);
        memset(b, 0, 1 << 20);
        void *p = launder(b + 4096);
        show(p);
        free(p);
    } else if (!strcmp(c, "free-interior-huge")) {
        char *b = malloc(64 << 20);
        void *p = launder(b + 4096);
        show(p);
        free(p);
    } else if (!strcmp(c, "free-mmap")) {
        void *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 2;
        show(p);
        free(p);
    } else if (!strcmp(c, "double-free-small")) {
        void *p = malloc(32);
        memset(p, 0, 32);
        free(p);
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-purged")) {
        /* A small page keeps two blocks; the OS pages between them, where the victim lies,
         * are given back while the page stays in use. Freeing the victim again must still be
         * caught, although its free mark went with the purged memory. */
        enum { N = 1300 };
        static void *b[N];
        for (int i = 0; i < N; i++) b[i] = malloc(48);
        for (int i = 1; i < N - 1; i++) free(b[i]);
        void (*collect)(_Bool) = (void (*)(_Bool))dlsym(RTLD_DEFAULT, "mallard_collect");
        if (!collect) return 2;
        collect(1);
        void *p = b[N / 2];
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-large")) {
        void *p = malloc(1 << 20);
        memset(p, 0, 1 << 20);
        free(p);
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-huge")) {
        void *p = malloc(64 << 20);
        free(p);
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-remote")) {
        /* Freed by another thread first (a remote free), then again by its owner. */
        void *p = malloc(32);
        pthread_t t;
        pthread_create(&t, NULL, free_in_thread, p);
        pthread_join(t, NULL);
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-batched")) {
        /* Freed by another thread that stays alive (the block may still sit in its batch of
         * remote frees, on no list of its page), then again by its owner. */
        void *p = malloc(32);
        pthread_t t;
        pthread_barrier_init(&freed, NULL, 2);
        pthread_create(&t, NULL, free_and_stay, p);
        pthread_barrier_wait(&freed);
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "double-free-cross")) {
        /* Freed by its owner thread, then again by another thread. */
        pthread_t t;
        pthread_barrier_init(&freed, NULL, 2);
        pthread_create(&t, NULL, alloc_free_and_wait, NULL);
        pthread_barrier_wait(&freed);
        show(owner_block);
        free(launder(owner_block));
    } else if (!strcmp(c, "free-after-realloc-zero")) {
        /* realloc(p, 0) freed p (glibc's behaviour), so this free is a double free. */
        void *p = malloc(40);
        memset(p, 0, 40);
        void *q = realloc(p, 0);
        if (q != NULL) return 2;
        show(p);
        free(launder(p));
    } else if (!strcmp(c, "realloc-freed")) {
        void *p = malloc(32);
        memset(p, 0, 32);
        free(p);
        show(p);
        p = realloc(launder(p), 64);
    } else if (!strcmp(c, "realloc-freed-large")) {
        void *p = malloc(1 << 20);
        memset(p, 0, 1 << 20);
        free(p);
        show(p);
        p = realloc(launder(p), 2 << 20);
    } else if (!strcmp(c, "realloc-stack")) {
        char local[64];
        memset(local, 0, sizeof local);
        void *p = launder(local);
        show(p);
        p = realloc(p, 100);
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    fprintf(stderr, "misuse %s was not caught\n", c);
    return 3;
}

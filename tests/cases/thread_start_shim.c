/* A preload shim, loaded before libmallard.so, that watches where threads are started from.
 * glibc frees thread stacks' TLS with its stack-cache lock held (in pthread_join,
 * pthread_create and a detached thread's exit), and pthread_create takes that lock: an
 * allocator that starts a thread from inside such a free deadlocks. So the shim aborts with one
 * line if pthread_create is called while this thread is inside free or pthread_join.
 *
 * A start inside another pthread_create is allowed: glibc allocates the new thread's TLS
 * (its DTV, with calloc) there outside its stack-cache lock, holding only its recursive TLS
 * lock, which a nested pthread_create on the same thread takes again.
 *
 * At exit it prints how many detached threads were started (mallard's purger is one; the test
 * program's own threads are joinable), so a test can tell that the purger ran at all.
 *
 * Its free passes every call on to the next definition (libmallard.so's); ld.so's free of TLS
 * blocks looks up `free` like everyone else, so it comes here too. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static __thread int inside; /* in free or pthread_join on this thread */
static __thread const char *inside_what;
static int detached_starts;

static void die(const char *msg) {
    (void)!write(2, msg, strlen(msg));
    _exit(70);
}

static void *next(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) die("thread_start_shim: no next definition\n");
    return f;
}

void free(void *p) {
    static void (*real)(void *);
    if (!real) real = (void (*)(void *))next("free");
    inside++;
    inside_what = "free";
    real(p);
    inside--;
}

int pthread_join(pthread_t t, void **ret) {
    static int (*real)(pthread_t, void **);
    if (!real) real = (int (*)(pthread_t, void **))next("pthread_join");
    inside++;
    inside_what = "pthread_join";
    int r = real(t, ret);
    inside--;
    return r;
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*f)(void *), void *arg) {
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (!real) real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))next("pthread_create");
    if (inside) {
        const char *what = inside_what;
        char msg[128] = "thread_start_shim: pthread_create called inside ";
        strncat(msg, what, sizeof msg - strlen(msg) - 2);
        strcat(msg, "\n");
        die(msg);
    }
    int detached = PTHREAD_CREATE_JOINABLE;
    if (attr) pthread_attr_getdetachstate(attr, &detached);
    int r = real(t, attr, f, arg);
    if (r == 0 && detached == PTHREAD_CREATE_DETACHED) __atomic_fetch_add(&detached_starts, 1, __ATOMIC_RELAXED);
    return r;
}

__attribute__((destructor)) static void report(void) {
    char msg[96];
    int n = __atomic_load_n(&detached_starts, __ATOMIC_RELAXED);
    char *p = msg + sizeof msg;
    *--p = 0;
    *--p = '\n';
    do *--p = (char)('0' + n % 10); while ((n /= 10) != 0);
    const char *head = "thread_start_shim: detached threads started: ";
    p -= strlen(head);
    memcpy(p, head, strlen(head));
    (void)!write(2, p, strlen(p));
}

/* Thread exit with other libraries' thread-local destructors that allocate and free after
 * libmallard.so's own (which abandons the thread's heap) has run.
 *
 * - pthread keys: 3 created in a constructor (before main), 3 in main, and 40 more by the
 *   first thread that needs them (so many that glibc allocates, with calloc, the second level
 *   of its key table when a thread sets one of them). The early keys exist before any malloc
 *   of the program, the others after main's first one. Their destructors check and free the value, malloc,
 *   realloc and free blocks, and set the key again for the first 3 rounds, so glibc runs up
 *   to 4 destructor rounds (PTHREAD_DESTRUCTOR_ITERATIONS): rounds after mallard's key
 *   destructor, whose mallocs make a fresh heap.
 * - C11 _Thread_local objects with destructors registered through __cxa_thread_atexit_impl
 *   (what C++ thread_local uses); they allocate and free, and one registers another.
 * - Threads differ in when they first call malloc: before setting keys, after, or never
 *   (their first malloc is in a destructor). Some end with pthread_exit.
 * - Blocks allocated in the last destructor round are handed to main, which checks and
 *   frees them after the threads are gone.
 *
 * Exits 0 when every destructor ran as often as expected and every block kept its bytes. */
#define _GNU_SOURCE
#include "common.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define THREADS 240
#define CONCURRENT 8
#define EARLY_KEYS 3
#define MAIN_KEYS 3
#define LATE_KEYS 40
#define ROUNDS 4 /* glibc's PTHREAD_DESTRUCTOR_ITERATIONS */

extern int __cxa_thread_atexit_impl(void (*dtor)(void *), void *obj, void *dso_symbol);
extern void *__dso_handle;

static pthread_key_t early[EARLY_KEYS], mainkeys[MAIN_KEYS], late[LATE_KEYS];
static pthread_once_t late_once = PTHREAD_ONCE_INIT;
static atomic_long key_dtor_calls, key_values_set, tls_dtor_calls, tls_dtor_expected, handed;

/* A value of a key: a block that says how big it is, which round it is for, and its seed. */
struct value {
    size_t size;
    uint64_t seed;
    int round;
    int key_no;
};

static char static_marker[64]; /* a key value that is not a heap block */

__attribute__((noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    _exit(1);
}

static struct value *new_value(int key_no, int round, uint64_t seed) {
    size_t size = sizeof(struct value) + 16 + (size_t)(seed % 3000);
    if (seed % 17 == 0) size += 700 << 10; /* now and then a large block */
    struct value *v = malloc(size);
    if (!v) die("tls_dtor: malloc(%zu) returned NULL in a destructor\n", size);
    v->size = size;
    v->seed = seed;
    v->round = round;
    v->key_no = key_no;
    fill_pattern(v + 1, size - sizeof *v, seed);
    return v;
}

static void check_value(const struct value *v, const char *where) {
    size_t off = check_pattern(v + 1, v->size - sizeof *v, v->seed);
    if (off != (size_t)-1)
        die("tls_dtor: %s: value of key %d round %d (%zu bytes at %p) changed at byte %zu\n", where, v->key_no,
            v->round, v->size, (const void *)v, off + sizeof *v);
}

/* Handed to main: blocks allocated in the last destructor round. */
static struct value *_Atomic handoff[THREADS * (EARLY_KEYS + MAIN_KEYS + LATE_KEYS + 2)];

static void hand_to_main(struct value *v) {
    long i = atomic_fetch_add(&handed, 1);
    if (i >= (long)(sizeof handoff / sizeof *handoff)) {
        free(v);
        return;
    }
    atomic_store(&handoff[i], v);
}

/* Allocation work a destructor does besides its value. */
static void churn(uint64_t seed) {
    unsigned char *a = malloc(24), *b = calloc(1, 5000), *c = malloc(100);
    if (!a || !b || !c) die("tls_dtor: allocation failed in a destructor\n");
    for (int i = 0; i < 5000; i++)
        if (b[i]) die("tls_dtor: calloc in a destructor: byte %d is %d\n", i, b[i]);
    fill_pattern(a, 24, seed);
    fill_pattern(c, 100, seed + 1);
    unsigned char *c2 = realloc(c, 70000);
    if (!c2 || check_pattern(c2, 100, seed + 1) != (size_t)-1) die("tls_dtor: realloc in a destructor lost bytes\n");
    if (check_pattern(a, 24, seed) != (size_t)-1) die("tls_dtor: a block changed in a destructor\n");
    free(a);
    free(b);
    free(c2);
}

static void key_dtor(void *arg, pthread_key_t key, int key_no) {
    atomic_fetch_add(&key_dtor_calls, 1);
    int round = 0;
    if (arg == static_marker) {
        round = 0;
    } else {
        struct value *v = arg;
        check_value(v, "key destructor");
        if (v->key_no != key_no) die("tls_dtor: key %d got the value of key %d\n", key_no, v->key_no);
        round = v->round;
        free(v);
    }
    uint64_t seed = mix64((uint64_t)key_no * 1000 + (uint64_t)round + (uintptr_t)&round);
    churn(seed);
    if (round + 1 < ROUNDS) {
        /* Set again: glibc runs another round for it. */
        if (pthread_setspecific(key, new_value(key_no, round + 1, seed)) != 0)
            die("tls_dtor: pthread_setspecific in a destructor failed\n");
        atomic_fetch_add(&key_values_set, 1);
    } else {
        hand_to_main(new_value(key_no, round + 1, seed));
    }
}

/* One destructor per key, so each knows its key. */
#define EARLY_DTOR(i) static void early_dtor_##i(void *v) { key_dtor(v, early[i], i); }
#define MAIN_DTOR(i) static void main_dtor_##i(void *v) { key_dtor(v, mainkeys[i], 100 + i); }
EARLY_DTOR(0)
EARLY_DTOR(1)
EARLY_DTOR(2)
MAIN_DTOR(0)
MAIN_DTOR(1)
MAIN_DTOR(2)
static void (*const early_dtors[EARLY_KEYS])(void *) = {early_dtor_0, early_dtor_1, early_dtor_2};
static void (*const main_dtors[MAIN_KEYS])(void *) = {main_dtor_0, main_dtor_1, main_dtor_2};

/* The late keys share a destructor that finds its key by the value's key number. */
static void late_dtor(void *arg) {
    struct value *v = arg;
    int key_no = v == (void *)static_marker ? -1 : v->key_no;
    if (key_no < 200 || key_no >= 200 + LATE_KEYS) die("tls_dtor: late key destructor got a bad value\n");
    key_dtor(arg, late[key_no - 200], key_no);
}

static void create_late_keys(void) {
    for (int i = 0; i < LATE_KEYS; i++)
        if (pthread_key_create(&late[i], late_dtor)) die("tls_dtor: pthread_key_create (late %d) failed\n", i);
}

__attribute__((constructor)) static void create_early_keys(void) {
    for (int i = 0; i < EARLY_KEYS; i++)
        if (pthread_key_create(&early[i], early_dtors[i])) die("tls_dtor: pthread_key_create failed\n");
}

/* ---- C11 thread-locals with destructors (__cxa_thread_atexit_impl) ---- */

struct tls_obj {
    struct value *block;
    int registered;
};
static _Thread_local struct tls_obj tls_a, tls_b;

static void tls_dtor_b(void *obj) {
    struct tls_obj *o = obj;
    atomic_fetch_add(&tls_dtor_calls, 1);
    if (o->block) {
        check_value(o->block, "thread_local destructor b");
        free(o->block);
        o->block = NULL;
    }
    churn(77);
    hand_to_main(new_value(300, 0, 991));
}

static void tls_dtor_a(void *obj) {
    struct tls_obj *o = obj;
    atomic_fetch_add(&tls_dtor_calls, 1);
    if (o->block) {
        check_value(o->block, "thread_local destructor a");
        o->block = realloc(o->block, o->block->size + 10000);
        if (!o->block) die("tls_dtor: realloc in a thread_local destructor failed\n");
        check_value(o->block, "thread_local destructor a after realloc");
        free(o->block);
        o->block = NULL;
    }
    churn(55);
    /* A destructor that registers another one: glibc runs it too. */
    tls_b.block = new_value(301, 0, 4242);
    atomic_fetch_add(&tls_dtor_expected, 1);
    __cxa_thread_atexit_impl(tls_dtor_b, &tls_b, &__dso_handle);
}

/* ---- the threads ---- */

static void set_early_keys(bool marker, uint64_t seed) {
    for (int i = 0; i < EARLY_KEYS; i++) {
        void *v = marker ? (void *)static_marker : (void *)new_value(i, 0, seed + (uint64_t)i);
        pthread_setspecific(early[i], v);
        atomic_fetch_add(&key_values_set, 1);
    }
}

static void set_other_keys(int late_keys, uint64_t seed) {
    for (int i = 0; i < MAIN_KEYS; i++) {
        pthread_setspecific(mainkeys[i], new_value(100 + i, 0, seed * 3 + (uint64_t)i));
        atomic_fetch_add(&key_values_set, 1);
    }
    /* Keys past the first 32: glibc callocs the second level of its table here. */
    pthread_once(&late_once, create_late_keys);
    for (int i = 0; i < late_keys; i++) {
        pthread_setspecific(late[i], new_value(200 + i, 0, seed * 7 + (uint64_t)i));
        atomic_fetch_add(&key_values_set, 1);
    }
}

static void register_tls_dtor(uint64_t seed, bool with_block) {
    if (with_block) tls_a.block = new_value(400, 0, seed);
    atomic_fetch_add(&tls_dtor_expected, 1);
    if (__cxa_thread_atexit_impl(tls_dtor_a, &tls_a, &__dso_handle)) die("tls_dtor: __cxa_thread_atexit_impl failed\n");
}

static void *thread_main(void *arg) {
    long n = (long)(intptr_t)arg;
    uint64_t seed = mix64((uint64_t)n);
    switch (n % 4) {
    case 0: { /* malloc first, then a thread_local destructor and keys */
        void *first = malloc(100);
        register_tls_dtor(seed, true);
        set_early_keys(false, seed);
        set_other_keys(4, seed);
        free(first);
        break;
    }
    case 1: /* keys set before the thread's first malloc */
        set_early_keys(true, seed);
        register_tls_dtor(seed, true);
        set_other_keys(4, seed);
        break;
    case 2: /* no malloc of its own: only the destructors (and glibc's bookkeeping) allocate */
        set_early_keys(true, seed);
        register_tls_dtor(seed, false);
        break;
    case 3: /* many keys, some past glibc's first 32 */
        register_tls_dtor(seed, true);
        set_early_keys(false, seed);
        set_other_keys(LATE_KEYS, seed);
        break;
    }
    if (n % 3 == 0) pthread_exit(NULL);
    return NULL;
}

int main(void) {
    require_mallard_if_asked("tls_dtor");
    double t0 = now_s();
    /* The main keys come after main's first malloc (mallard makes its own key then). */
    void *volatile first = malloc(10);
    free(first);
    for (int i = 0; i < MAIN_KEYS; i++)
        if (pthread_key_create(&mainkeys[i], main_dtors[i])) die("tls_dtor: pthread_key_create failed\n");
    pthread_t th[CONCURRENT];
    for (long t = 0; t < THREADS; t++) {
        int s = (int)(t % CONCURRENT);
        if (t >= CONCURRENT) pthread_join(th[s], NULL);
        if (pthread_create(&th[s], NULL, thread_main, (void *)(intptr_t)t)) die("tls_dtor: pthread_create failed\n");
    }
    for (int s = 0; s < CONCURRENT; s++) pthread_join(th[s], NULL);

    /* Every key value set was destroyed once; a thread of kind k set 4 rounds per key. */
    long calls = atomic_load(&key_dtor_calls), set = atomic_load(&key_values_set);
    long tcalls = atomic_load(&tls_dtor_calls), texp = atomic_load(&tls_dtor_expected);
    long h = atomic_load(&handed);
    int failed = 0;
    if (calls != set) {
        printf("tls_dtor: FAIL %ld key values were set but %ld key destructor calls ran\n", set, calls);
        failed = 1;
    }
    if (tcalls != texp) {
        printf("tls_dtor: FAIL %ld thread_local destructors registered but %ld ran\n", texp, tcalls);
        failed = 1;
    }
    long checked = 0;
    for (long i = 0; i < h && i < (long)(sizeof handoff / sizeof *handoff); i++) {
        struct value *v = atomic_load(&handoff[i]);
        if (!v) continue;
        check_value(v, "main, after the threads exited");
        free(v);
        checked++;
    }
    printf("tls_dtor: %d threads, %ld key destructor calls, %ld thread_local destructor calls, %ld blocks from "
           "destructors freed by main, %.2f s\n",
           THREADS, calls, tcalls, checked, now_s() - t0);
    return failed;
}

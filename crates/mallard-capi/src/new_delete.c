/* The body of C++ operator new for libmallard.so (cxx.rs exports every form), written in C so
 * that the library needs no libstdc++ of its own.
 *
 * When memory runs out, operator new does what the standard says: it calls the installed
 * new_handler and retries, and with no handler it throws std::bad_alloc. Both come from
 * libstdc++, which every C++ program has loaded; they are weak references here, so a C
 * program without libstdc++ still loads the library (and can never reach this code). The file
 * is compiled with -fexceptions, so the exception unwinds through these frames.
 *
 * The nothrow forms return NULL when there is no handler. With a handler installed they call
 * it too; a handler that throws from a nothrow new is the one case where the exception is not
 * turned into NULL (catching it would need C++). */
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

typedef void (*new_handler)(void);

extern new_handler _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));

void *__mallard_new(size_t size, size_t align);

/* Returns when the caller should retry; throws or returns 0 otherwise. */
static int out_of_memory(int nothrow) {
    new_handler h = _ZSt15get_new_handlerv ? _ZSt15get_new_handlerv() : NULL;
    if (h) {
        h();
        return 1;
    }
    if (nothrow) return 0;
    if (_ZSt17__throw_bad_allocv) _ZSt17__throw_bad_allocv();
    static const char msg[] = "mallard: out of memory in operator new and no std::bad_alloc to throw\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    abort();
}

static void *new_impl(size_t size, size_t align, int nothrow) {
    for (;;) {
        void *p = __mallard_new(size, align);
        if (__builtin_expect(p != NULL, 1)) return p;
        if (!out_of_memory(nothrow)) return NULL;
    }
}

#define ALIGN_NONE 0

/* The eight forms of operator new. cxx.rs exports them under their C++ names as one-jump
 * trampolines, so no Rust frame stands between these and the exception they may throw. */
void *__mallard_cxx_Znwm(size_t n) { return new_impl(n, ALIGN_NONE, 0); }
void *__mallard_cxx_Znam(size_t n) { return new_impl(n, ALIGN_NONE, 0); }
void *__mallard_cxx_ZnwmRKSt9nothrow_t(size_t n, const void *nt) { (void)nt; return new_impl(n, ALIGN_NONE, 1); }
void *__mallard_cxx_ZnamRKSt9nothrow_t(size_t n, const void *nt) { (void)nt; return new_impl(n, ALIGN_NONE, 1); }
void *__mallard_cxx_ZnwmSt11align_val_t(size_t n, size_t a) { return new_impl(n, a, 0); }
void *__mallard_cxx_ZnamSt11align_val_t(size_t n, size_t a) { return new_impl(n, a, 0); }
void *__mallard_cxx_ZnwmSt11align_val_tRKSt9nothrow_t(size_t n, size_t a, const void *nt) { (void)nt; return new_impl(n, a, 1); }
void *__mallard_cxx_ZnamSt11align_val_tRKSt9nothrow_t(size_t n, size_t a, const void *nt) { (void)nt; return new_impl(n, a, 1); }

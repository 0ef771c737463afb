/* The body of C++ operator new for libmallard.so (cxx.rs exports every form), written in C so
 * that the library needs no libstdc++ of its own.
 *
 * When memory runs out, operator new does what the standard says: it calls the installed
 * new_handler and retries, and with no handler it throws std::bad_alloc. Both come from
 * libstdc++, which every C++ program has loaded; they are weak references here, so a C
 * program without libstdc++ still loads the library, and C++ code it loads later with dlopen
 * finds them through `stdcxx`. The file is compiled with -fexceptions, so the exception
 * unwinds through these frames.
 *
 * The nothrow forms return NULL when there is no handler. With a handler installed, the
 * standard wants the handler called and a bad_alloc it throws turned into NULL, which takes a
 * C++ catch. libstdc++'s own nothrow operator is exactly that: a try/catch around the throwing
 * form, which resolves to ours. So in that one case (out of memory, handler installed) the
 * nothrow form hands over to the next definition of itself, found with dlsym(RTLD_NEXT). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

typedef void (*new_handler)(void);

extern new_handler _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));

void *__mallard_new(size_t size, size_t align);

/* libstdc++'s definition of `name`. The weak reference is bound when the library loads, so it
 * is null when libstdc++ came later: a C program (or python3) that dlopens C++ code. That
 * libstdc++ may be private to the code that loaded it (RTLD_LOCAL), out of reach of the
 * global scope; a RTLD_NOLOAD open finds it wherever it is, and loads nothing. Only called
 * when memory has run out. */
static void *stdcxx(void *weak, const char *name) {
    if (weak) return weak;
    void *lib = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) return NULL;
    void *sym = dlsym(lib, name);
    dlclose(lib); /* drops the reference the open took; the library stays, loaded by its users */
    return sym;
}

static new_handler current_handler(void) {
    new_handler (*get)(void) =
        (new_handler(*)(void))stdcxx((void *)_ZSt15get_new_handlerv, "_ZSt15get_new_handlerv");
    return get ? get() : NULL;
}

static void *new_throwing(size_t size, size_t align) {
    for (;;) {
        void *p = __mallard_new(size, align);
        if (__builtin_expect(p != NULL, 1)) return p;
        new_handler h = current_handler();
        if (h) {
            h(); /* may throw, or free memory and return: then retry */
            continue;
        }
        void (*throw_bad_alloc)(void) =
            (void (*)(void))stdcxx((void *)_ZSt17__throw_bad_allocv, "_ZSt17__throw_bad_allocv");
        if (throw_bad_alloc) throw_bad_alloc();
        static const char msg[] = "mallard: out of memory in operator new and no std::bad_alloc to throw\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
        abort();
    }
}

/* A nothrow form's libstdc++ definition: (size, nothrow) or (size, align, nothrow). */
typedef void *(*nothrow_new)(size_t, const void *);
typedef void *(*nothrow_new_aligned)(size_t, size_t, const void *);

static void *new_nothrow(size_t size, size_t align, const void *nt, const char *name) {
    void *p = __mallard_new(size, align);
    if (__builtin_expect(p != NULL, 1) || current_handler() == NULL) return p;
    void *next = dlsym(RTLD_NEXT, name);
    if (next == NULL) return NULL; /* no libstdc++ after us: no handler could be called safely */
    if (align == 0) return ((nothrow_new)next)(size, nt);
    return ((nothrow_new_aligned)next)(size, align, nt);
}

#define ALIGN_NONE 0

/* The eight forms of operator new. cxx.rs exports them under their C++ names as one-jump
 * trampolines, so no Rust frame stands between these and the exception they may throw. */
void *__mallard_cxx_Znwm(size_t n) { return new_throwing(n, ALIGN_NONE); }
void *__mallard_cxx_Znam(size_t n) { return new_throwing(n, ALIGN_NONE); }
void *__mallard_cxx_ZnwmRKSt9nothrow_t(size_t n, const void *nt) {
    return new_nothrow(n, ALIGN_NONE, nt, "_ZnwmRKSt9nothrow_t");
}
void *__mallard_cxx_ZnamRKSt9nothrow_t(size_t n, const void *nt) {
    return new_nothrow(n, ALIGN_NONE, nt, "_ZnamRKSt9nothrow_t");
}
void *__mallard_cxx_ZnwmSt11align_val_t(size_t n, size_t a) { return new_throwing(n, a); }
void *__mallard_cxx_ZnamSt11align_val_t(size_t n, size_t a) { return new_throwing(n, a); }
void *__mallard_cxx_ZnwmSt11align_val_tRKSt9nothrow_t(size_t n, size_t a, const void *nt) {
    return new_nothrow(n, a, nt, "_ZnwmSt11align_val_tRKSt9nothrow_t");
}
void *__mallard_cxx_ZnamSt11align_val_tRKSt9nothrow_t(size_t n, size_t a, const void *nt) {
    return new_nothrow(n, a, nt, "_ZnamSt11align_val_tRKSt9nothrow_t");
}

// C++ code that a C program loads with dlopen (cxx_plugin_host.c): it runs out of memory in
// operator new and catches std::bad_alloc, with and without a new_handler.
#include <cstddef>
#include <new>

static int handler_calls = 0;
static void handler() {
    handler_calls++;
    std::set_new_handler(nullptr); // the next failure throws
}
// Read at run time, so the compiler cannot drop or fold the allocation.
volatile std::size_t too_big = std::size_t(1) << 60;

// 2 if bad_alloc was caught.
extern "C" int plugin_try_new() {
    try {
        void *p = ::operator new(too_big);
        ::operator delete(p);
        return 1;
    } catch (const std::bad_alloc &) {
        return 2;
    }
}

// 10 + the handler's calls if bad_alloc was caught after the handler ran.
extern "C" int plugin_try_new_with_handler() {
    handler_calls = 0;
    std::set_new_handler(handler);
    try {
        void *p = ::operator new[](too_big);
        ::operator delete[](p);
        return 1;
    } catch (const std::bad_alloc &) {
        return 10 + handler_calls;
    }
}

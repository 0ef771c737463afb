/* The library never unwinds: it is built with panic = "abort", and no panic is reachable.
 * Rust's std still names the unwinder (for panic backtraces and the landing pads of its
 * precompiled code), which makes the library depend on libgcc_s.so: some 100 KiB of RSS in
 * every process it is preloaded into, and a library that small programs did not load before.
 * These hidden definitions satisfy those references inside libmallard.so alone (the program
 * and its C++ runtime keep binding to the real unwinder), so the linker's --as-needed drops
 * libgcc_s. A backtrace comes out empty; anything that would unwind aborts. */
#include <stdint.h>
#include <stdlib.h>

#define HIDDEN __attribute__((visibility("hidden")))

struct _Unwind_Context;
struct _Unwind_Exception;
typedef int (*trace_fn)(struct _Unwind_Context *, void *);

/* _URC_END_OF_STACK: no frames. */
HIDDEN int _Unwind_Backtrace(trace_fn f, void *arg) { (void)f; (void)arg; return 5; }
HIDDEN uintptr_t _Unwind_GetIP(struct _Unwind_Context *c) { (void)c; abort(); }
HIDDEN uintptr_t _Unwind_GetIPInfo(struct _Unwind_Context *c, int *before) { (void)c; (void)before; abort(); }
HIDDEN uintptr_t _Unwind_GetDataRelBase(struct _Unwind_Context *c) { (void)c; abort(); }
HIDDEN uintptr_t _Unwind_GetTextRelBase(struct _Unwind_Context *c) { (void)c; abort(); }
HIDDEN uintptr_t _Unwind_GetRegionStart(struct _Unwind_Context *c) { (void)c; abort(); }
HIDDEN void *_Unwind_GetLanguageSpecificData(struct _Unwind_Context *c) { (void)c; abort(); }
HIDDEN void _Unwind_SetGR(struct _Unwind_Context *c, int i, uintptr_t v) { (void)c; (void)i; (void)v; abort(); }
HIDDEN void _Unwind_SetIP(struct _Unwind_Context *c, uintptr_t v) { (void)c; (void)v; abort(); }
HIDDEN void _Unwind_Resume(struct _Unwind_Exception *e) { (void)e; abort(); }

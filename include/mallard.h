/* mallard.h: the extended API of libmallard.so for C and C++ programs.
 *
 * The standard allocation functions (malloc, free, calloc, realloc, reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, free_sized,
 * free_aligned_sized) and glibc's extras (malloc_trim, mallopt, mallinfo, mallinfo2,
 * malloc_stats) are declared by <stdlib.h> and <malloc.h> as usual; libmallard.so provides
 * them all. This header adds what only mallard has.
 *
 * Link with -lmallard, or preload libmallard.so (then look the functions up with dlsym, or
 * declare them weak, if the program must also run without mallard).
 *
 * Environment (read once, at load):
 *   MALLARD_STATS=1            print the statistics table to stderr at exit (default 0)
 *   MALLARD_VERBOSE=1          say on stderr that mallard is loaded, with its options (default 0)
 *   MALLARD_PURGE_DELAY_MS=N   keep free memory committed N ms before giving it back (default 100)
 *   MALLARD_REPORT=FILE        append this process's exit record to FILE (used by `mallard run`)
 * A value that does not parse prints a warning and keeps the default.
 */
#ifndef MALLARD_H
#define MALLARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* mallopt() parameter: the purge delay in milliseconds (value >= 0). */
#define M_MALLARD_PURGE_DELAY (-200)

/* A snapshot of the allocator's main figures, summed over all threads (the chunk figures are
 * the calling thread's). */
struct mallard_stats {
    int64_t live_bytes;         /* bytes in live blocks (block sizes; huge blocks as asked) */
    int64_t mapped_bytes;       /* bytes mapped from the OS for segments right now */
    int64_t resident_bytes;     /* the process's resident set (from /proc/self/statm) */
    int64_t segments;           /* segments mapped right now */
    int64_t huge_blocks;        /* live blocks with a mapping of their own, and their bytes */
    int64_t huge_bytes;
    int64_t large_blocks;       /* live blocks of the chunk heap, and their bytes */
    int64_t large_bytes;
    int64_t remote_frees;       /* blocks freed by a thread other than their owner, ever */
    int64_t bytes_purged;       /* bytes of free memory given back to the OS, ever */
    int64_t heaps_created;      /* thread heaps created, ever */
    int64_t free_chunks;        /* the calling thread's chunk heap: free chunks, largest one */
    int64_t largest_free_chunk;
};

/* Fills *out (which may be NULL) with a snapshot. Never allocates. */
void mallard_stats(struct mallard_stats *out);

/* Writes the full statistics table to stderr. Never allocates. */
void mallard_stats_print(void);

/* Collects the calling thread's pending remote frees and gives free memory back to the OS:
 * all of it with force, else only what stayed free longer than the purge delay. */
void mallard_collect(bool force);

/* Sets how long free memory stays committed before it is purged, in milliseconds. */
void mallard_set_purge_delay_ms(uint64_t ms);

/* The usable size of block p (at least what was asked for; 0 for NULL). p must be a live
 * block of mallard: anything else is reported and the program aborts. */
size_t mallard_usable_size(const void *p);

#ifdef __cplusplus
}
#endif

#endif /* MALLARD_H */

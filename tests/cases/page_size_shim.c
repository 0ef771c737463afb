/* A preload shim, loaded before libmallard.so, that makes this 4 KiB-page machine look like a
 * kernel with bigger pages (16 or 64 KiB, as aarch64 kernels have), so that every decommit and
 * guard of mallard's is checked against them:
 *
 *   FAKE_PAGE=16384 or 65536 (required; 4096 runs the same checks at the real page)
 *
 * - `sysconf(_SC_PAGESIZE)`, `getpagesize()` and `getauxval(AT_PAGESZ)` answer FAKE_PAGE
 *   (and `_SC_PHYS_PAGES`/`_SC_AVPHYS_PAGES` count pages of it);
 * - `mmap` places every mapping it chooses (no MAP_FIXED) on a FAKE_PAGE boundary, and maps
 *   whole pages of it, as such a kernel does;
 * - `madvise`, `mprotect`, `munmap`, `mremap` and `mincore` stop the program with one line
 *   (`page_size_shim: ...`, then abort) on a call such a kernel would refuse or round over
 *   live data, and otherwise do what it would;
 * - at exit, with PAGE_SIZE_SHIM_STATS=1, one line counts the calls checked.
 *
 * What is checked, and why:
 * - Every address (madvise, mprotect, munmap, mremap's old and new address, mincore, a MAP_FIXED
 *   mmap) must be FAKE_PAGE-aligned: the kernel fails the call with EINVAL. mallard ignores
 *   those errors (`keep_errno`), so a misaligned decommit would silently keep its memory, a
 *   misaligned guard would silently not guard, a misaligned munmap would leak a mapping.
 * - The length of madvise and mprotect must be whole pages: the kernel rounds it UP to the
 *   page, so a 4 KiB MADV_DONTNEED on a 64 KiB page zeroes the 60 KiB after it (silent data
 *   loss), and a 4 KiB mprotect makes the whole page inaccessible, or accessible again.
 * - The lengths of munmap and mremap are NOT checked, only rounded up as the kernel does.
 *   Every mapping is whole pages (mmap rounds its length up), and these calls work on whole
 *   mappings or their tails, so rounding a length up only reaches the rest of the last page of
 *   the mapping, which nothing can be using unless the caller unmaps part of a page it still
 *   uses. That case is not silent here: the shim really unmaps (or moves away) the rounded
 *   length on this machine too, so a later access to the lost bytes faults, as it would there.
 *   (mallard's own `reserve` relies on this: it trims the tail of an over-sized mapping with a
 *   length that is whole 4 KiB pages, which on a bigger page ends at the mapping's end.)
 *
 * What it does not fake: /proc (statm, smaps) still counts 4 KiB pages, so a resident size
 * computed as statm's pages times sysconf's page (mallard's `resident_bytes`, idle.c) comes out
 * FAKE_PAGE / 4096 times too big here (on a real kernel both are its page, and it is right).
 *
 * It must not allocate (it runs inside malloc): every call is forwarded with `syscall`, the
 * real sysconf is glibc's `__sysconf`, the real getauxval `__getauxval`; no dlsym. glibc's own
 * internal mmap/mprotect calls (thread stacks, ld.so loading libraries) do not go through these
 * symbols and keep the real 4 KiB page; only calls made through the dynamic symbols (mallard's,
 * the program's) see the fake one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REAL_PAGE 4096UL

extern long __sysconf(int name);
extern unsigned long __getauxval(unsigned long type);

static unsigned long fake_page_cached;
static unsigned long checked[5]; /* madvise, mprotect, munmap, mremap, mmap */

static void put(const char *s) { (void)!syscall(SYS_write, 2, s, strlen(s)); }

/* Appends `v` to `buf` at `*at` (decimal, or hex with 0x). */
static void fmt_num(char *buf, size_t *at, size_t cap, unsigned long v, int hex) {
    char tmp[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(hex ? v % 16 : v % 10);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v = hex ? v / 16 : v / 10;
    } while (v);
    if (hex && *at + 2 < cap) {
        buf[(*at)++] = '0';
        buf[(*at)++] = 'x';
    }
    while (n && *at + 1 < cap) buf[(*at)++] = tmp[--n];
    buf[*at] = 0;
}

static void fmt_str(char *buf, size_t *at, size_t cap, const char *s) {
    while (*s && *at + 1 < cap) buf[(*at)++] = *s++;
    buf[*at] = 0;
}

/* Stops the program with one line: the call, its address and length, the page, what is wrong
 * and who called (module + offset, for addr2line). */
__attribute__((noreturn, noinline)) static void die(const char *call, unsigned long addr, unsigned long len,
                                                    const char *what, void *caller) {
    char line[512];
    size_t at = 0, cap = sizeof line;
    line[0] = 0;
    fmt_str(line, &at, cap, "page_size_shim: ");
    fmt_str(line, &at, cap, call);
    fmt_str(line, &at, cap, "(");
    fmt_num(line, &at, cap, addr, 1);
    fmt_str(line, &at, cap, ", ");
    fmt_num(line, &at, cap, len, 0);
    fmt_str(line, &at, cap, ") on ");
    fmt_num(line, &at, cap, fake_page_cached, 0);
    fmt_str(line, &at, cap, "-byte pages: ");
    fmt_str(line, &at, cap, what);
    Dl_info info;
    if (caller && dladdr(caller, &info) && info.dli_fname) {
        const char *name = strrchr(info.dli_fname, '/');
        fmt_str(line, &at, cap, "; called from ");
        fmt_str(line, &at, cap, name ? name + 1 : info.dli_fname);
        fmt_str(line, &at, cap, "+");
        fmt_num(line, &at, cap, (unsigned long)caller - (unsigned long)info.dli_fbase, 1);
    }
    fmt_str(line, &at, cap, "\n");
    put(line);
    abort();
}

static unsigned long fake_page(void) {
    unsigned long p = __atomic_load_n(&fake_page_cached, __ATOMIC_RELAXED);
    if (p) return p;
    const char *v = getenv("FAKE_PAGE"); /* getenv does not allocate */
    unsigned long n = 0;
    for (; v && *v >= '0' && *v <= '9'; v++) n = n * 10 + (unsigned long)(*v - '0');
    if (!v || *v || n < REAL_PAGE || (n & (n - 1)) || n > (1UL << 20)) {
        put("page_size_shim: FAKE_PAGE must be a power of two from 4096 to 1048576 (16384, 65536)\n");
        abort();
    }
    __atomic_store_n(&fake_page_cached, n, __ATOMIC_RELAXED);
    return n;
}

static int misaligned(unsigned long v) { return (v & (fake_page() - 1)) != 0; }
static unsigned long round_up(unsigned long v) { return (v + fake_page() - 1) & ~(fake_page() - 1); }
static void count(int i) { __atomic_fetch_add(&checked[i], 1, __ATOMIC_RELAXED); }

/* ---- the page size ---- */

long sysconf(int name) {
    switch (name) {
    case _SC_PAGESIZE:
        return (long)fake_page();
    case _SC_PHYS_PAGES:
    case _SC_AVPHYS_PAGES: {
        long n = __sysconf(name);
        return n < 0 ? n : (long)((unsigned long)n / (fake_page() / REAL_PAGE));
    }
    default:
        return __sysconf(name);
    }
}

int getpagesize(void) { return (int)fake_page(); }

unsigned long getauxval(unsigned long type) {
    if (type == AT_PAGESZ) return fake_page();
    return __getauxval(type);
}

/* ---- mappings ---- */

static void *raw_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/* A mapping of `len` (whole fake pages) at a fake-page boundary the kernel chooses: an
 * inaccessible reservation one page bigger, the mapping put over its aligned part, the rest
 * unmapped. */
static void *aligned_mmap(size_t len, int prot, int flags, int fd, off_t off) {
    unsigned long page = fake_page(), total = len + page - REAL_PAGE;
    if (total < len) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *res = raw_mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED) return res;
    unsigned long start = (unsigned long)res, aligned = (start + page - 1) & ~(page - 1);
    void *p = raw_mmap((void *)aligned, len, prot, (flags & ~MAP_FIXED_NOREPLACE) | MAP_FIXED, fd, off);
    if (p == MAP_FAILED) {
        int e = errno;
        syscall(SYS_munmap, res, total);
        errno = e;
        return p;
    }
    if (aligned > start) syscall(SYS_munmap, start, aligned - start);
    if (start + total > aligned + len) syscall(SYS_munmap, aligned + len, start + total - aligned - len);
    return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    count(4);
    if (flags & MAP_HUGETLB) return raw_mmap(addr, len, prot, flags, fd, off);
    if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
        if (misaligned((unsigned long)addr))
            die("mmap", (unsigned long)addr, len, "MAP_FIXED address not page-aligned", __builtin_return_address(0));
    }
    if (misaligned((unsigned long)off))
        die("mmap", (unsigned long)addr, len, "file offset not page-aligned", __builtin_return_address(0));
    if (len == 0 || round_up(len) < len) return raw_mmap(addr, len, prot, flags, fd, off); /* the kernel's error */
    size_t n = round_up(len);
    if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) return raw_mmap(addr, n, prot, flags, fd, off);
    if (addr) {
        /* A hint: taken if the kernel gives it (or any aligned place), else placed by us. */
        void *p = raw_mmap((void *)((unsigned long)addr & ~(fake_page() - 1)), n, prot, flags, fd, off);
        if (p == MAP_FAILED || !misaligned((unsigned long)p)) return p;
        syscall(SYS_munmap, p, n);
    }
    return aligned_mmap(n, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) __attribute__((alias("mmap")));

int munmap(void *addr, size_t len) {
    count(2);
    if (misaligned((unsigned long)addr))
        die("munmap", (unsigned long)addr, len, "address not page-aligned", __builtin_return_address(0));
    /* The length is rounded up, as the kernel does (see the top of the file). */
    size_t n = len ? round_up(len) : 0;
    return (int)syscall(SYS_munmap, addr, n ? n : len);
}

int mprotect(void *addr, size_t len, int prot) {
    count(1);
    if (misaligned((unsigned long)addr))
        die("mprotect", (unsigned long)addr, len, "address not page-aligned", __builtin_return_address(0));
    if (misaligned(len))
        die("mprotect", (unsigned long)addr, len, "length not whole pages (the kernel would round it up)",
            __builtin_return_address(0));
    return (int)syscall(SYS_mprotect, addr, len, prot);
}

int madvise(void *addr, size_t len, int advice) {
    count(0);
    if (misaligned((unsigned long)addr))
        die("madvise", (unsigned long)addr, len, "address not page-aligned", __builtin_return_address(0));
    if (misaligned(len))
        die("madvise", (unsigned long)addr, len,
            advice == MADV_DONTNEED ? "MADV_DONTNEED length not whole pages (the kernel would zero the rest of the last page)"
                                    : "length not whole pages (the kernel would round it up)",
            __builtin_return_address(0));
    return (int)syscall(SYS_madvise, addr, len, advice);
}

void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...) {
    count(3);
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    if (misaligned((unsigned long)old))
        die("mremap", (unsigned long)old, old_size, "old address not page-aligned", __builtin_return_address(0));
    if ((flags & MREMAP_FIXED) && misaligned((unsigned long)new_addr))
        die("mremap", (unsigned long)new_addr, new_size, "new address not page-aligned", __builtin_return_address(0));
    /* Both sizes are rounded up, as the kernel does (see the top of the file). */
    size_t o = old_size ? round_up(old_size) : 0, n = round_up(new_size);
    if (new_size == 0 || n < new_size) return (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_addr);
    if ((flags & MREMAP_MAYMOVE) && !(flags & MREMAP_FIXED) && o != 0) {
        /* Where the kernel would move it must be a fake-page boundary too: in place if it
         * can, else into an aligned mapping of ours. */
        void *p = (void *)syscall(SYS_mremap, old, o, n, flags & ~MREMAP_MAYMOVE, NULL);
        if (p != MAP_FAILED) return p;
        void *target = aligned_mmap(n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (target == MAP_FAILED) return target;
        p = (void *)syscall(SYS_mremap, old, o, n, flags | MREMAP_FIXED, target);
        if (p == MAP_FAILED) {
            int e = errno;
            syscall(SYS_munmap, target, n);
            errno = e;
        }
        return p;
    }
    return (void *)syscall(SYS_mremap, old, o, n, flags, new_addr);
}

int mincore(void *addr, size_t len, unsigned char *vec) {
    if (misaligned((unsigned long)addr))
        die("mincore", (unsigned long)addr, len, "address not page-aligned", __builtin_return_address(0));
    /* One byte per fake page (the kernel's page): resident if any of its real pages is. */
    unsigned long page = fake_page(), per = page / REAL_PAGE, base = (unsigned long)addr;
    size_t pages = (len + page - 1) / page;
    unsigned char buf[256];
    memset(vec, 0, pages);
    for (unsigned long j = 0; j < pages * per; j += sizeof buf) {
        unsigned long k = pages * per - j < sizeof buf ? pages * per - j : sizeof buf;
        long r = syscall(SYS_mincore, base + j * REAL_PAGE, k * REAL_PAGE, buf);
        if (r != 0) return (int)r;
        for (unsigned long m = 0; m < k; m++) vec[(j + m) / per] |= buf[m] & 1;
    }
    return 0;
}

__attribute__((destructor)) static void report(void) {
    const char *v = getenv("PAGE_SIZE_SHIM_STATS");
    if (!v || v[0] != '1') return;
    char line[256];
    size_t at = 0, cap = sizeof line;
    static const char *names[5] = {"madvise", "mprotect", "munmap", "mremap", "mmap"};
    fmt_str(line, &at, cap, "page_size_shim: ");
    fmt_num(line, &at, cap, fake_page(), 0);
    fmt_str(line, &at, cap, "-byte pages; calls checked:");
    for (int i = 0; i < 5; i++) {
        fmt_str(line, &at, cap, " ");
        fmt_str(line, &at, cap, names[i]);
        fmt_str(line, &at, cap, " ");
        fmt_num(line, &at, cap, __atomic_load_n(&checked[i], __ATOMIC_RELAXED), 0);
    }
    fmt_str(line, &at, cap, "\n");
    put(line);
}

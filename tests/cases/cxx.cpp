// Every C++ operator new/delete form with libmallard.so, std::bad_alloc, new-handlers, and
// the STL from several threads.
//
// `cxx [--require-mallard] [CASE]`: without CASE, runs the main checks; CASE is one of
// - `aligned-impossible`: aligned operator new of sizes that overflow when rounded up to the
//   alignment throws bad_alloc (nothrow forms: nullptr);
// - `nothrow-throwing-handler`: a nothrow new whose new-handler throws bad_alloc returns
//   nullptr (the standard's nothrow new calls the throwing one and catches).
// `--require-mallard` fails unless every operator new/delete symbol is libmallard's.
// Prints `ok`/`FAIL` lines; exits 1 if any check failed.
#include <dlfcn.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

static int failures = 0;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            std::printf(__VA_ARGS__);                     \
            std::printf("\n");                            \
            std::fflush(stdout);                          \
            failures++;                                   \
        }                                                 \
    } while (0)

// A size the compiler cannot see.
static size_t opaque(size_t n) {
    __asm__ volatile("" : "+r"(n));
    return n;
}

static bool aligned_to(const void* p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

static size_t (*usable)(const void*) = nullptr;

// Fills and checks the block (its first MiB and its last byte when it is bigger).
static void fill_check(void* p, size_t n, uint64_t seed, const char* what) {
    if (usable && p) CHECK(usable(p) >= n, "%s: usable size %zu < %zu", what, usable(p), n);
    if (n > (size_t(1) << 20)) {
        unsigned char* last = static_cast<unsigned char*>(p) + n - 1;
        *last = 0x3c;
        CHECK(*last == 0x3c, "%s: last byte of %zu-byte block %p", what, n, p);
        n = size_t(1) << 20;
    }
    fill_pattern(p, n, seed);
    size_t off = check_pattern(p, n, seed);
    CHECK(off == (size_t)-1, "%s: %zu-byte block %p does not keep byte %zu", what, n, p, off);
}

// ---- which allocator serves operator new ----

static void require_mallard() {
    const char* names[] = {"_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
                           "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t",
                           "_ZnamSt11align_val_tRKSt9nothrow_t", "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm",
                           "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t", "_ZdlPvSt11align_val_t",
                           "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
                           "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t", "malloc",
                           "free"};
    for (const char* n : names) {
        void* f = dlsym(RTLD_DEFAULT, n);
        Dl_info info;
        bool found = f && dladdr(f, &info) && info.dli_fname;
        CHECK(found && std::strstr(info.dli_fname, "libmallard"), "%s comes from %s, not libmallard", n,
              found ? info.dli_fname : "nowhere");
    }
}

// ---- plain, array, nothrow, sized ----

struct Tracked {
    static std::atomic<long> live;
    uint64_t v[3];
    Tracked() : v{1, 2, 3} { live++; }
    ~Tracked() { live--; }
};
std::atomic<long> Tracked::live{0};

static void plain_forms() {
    for (size_t n : {size_t(1), size_t(7), size_t(16), size_t(100), size_t(1000), size_t(5000), size_t(70000),
                     size_t(600) << 10, size_t(3) << 20, size_t(9) << 20}) {
        char* a = new char[n];
        CHECK(aligned_to(a, __STDCPP_DEFAULT_NEW_ALIGNMENT__), "new char[%zu] = %p not aligned to %d", n,
              static_cast<void*>(a), __STDCPP_DEFAULT_NEW_ALIGNMENT__);
        fill_check(a, n, n, "new char[]");
        delete[] a;
        void* p = ::operator new(n);
        fill_check(p, n, n + 1, "operator new");
        ::operator delete(p, n);  // sized
        void* q = ::operator new[](n);
        fill_check(q, n, n + 2, "operator new[]");
        ::operator delete[](q, n);  // sized
        void* r = ::operator new(n, std::nothrow);
        CHECK(r != nullptr, "operator new(%zu, nothrow) returned nullptr", n);
        fill_check(r, n, n + 3, "operator new(nothrow)");
        ::operator delete(r, std::nothrow);
        void* s = ::operator new[](n, std::nothrow);
        CHECK(s != nullptr, "operator new[](%zu, nothrow) returned nullptr", n);
        fill_check(s, n, n + 4, "operator new[](nothrow)");
        ::operator delete[](s, std::nothrow);
        void* t = ::operator new(n);
        ::operator delete(t);  // unsized
    }
    Tracked* one = new Tracked;
    Tracked* arr = new Tracked[100];  // a cookie holds the count
    Tracked* nt = new (std::nothrow) Tracked;
    Tracked* nta = new (std::nothrow) Tracked[10];
    CHECK(Tracked::live == 112, "%ld Tracked objects live, want 112", Tracked::live.load());
    CHECK(arr[99].v[2] == 3 && one->v[0] == 1 && nt && nta, "constructed objects");
    delete one;  // sized delete with -fsized-deallocation
    delete[] arr;
    delete nt;
    delete[] nta;
    CHECK(Tracked::live == 0, "%ld Tracked objects live after delete, want 0", Tracked::live.load());
    int* i = new int(42);
    CHECK(*i == 42, "new int(42)");
    delete i;
    delete static_cast<int*>(nullptr);
    ::operator delete(nullptr);
    ::operator delete[](nullptr);
}

// ---- over-aligned ----

template <size_t A>
struct alignas(A) Over {
    static std::atomic<long> live;
    unsigned char bytes[A];
    Over() {
        std::memset(bytes, 0x5a, sizeof bytes);
        live++;
    }
    ~Over() { live--; }
};
template <size_t A>
std::atomic<long> Over<A>::live{0};

template <size_t A>
static void over_aligned_type() {
    Over<A>* one = new Over<A>;
    CHECK(aligned_to(one, A), "new Over<%zu> = %p not aligned", A, static_cast<void*>(one));
    Over<A>* arr = new Over<A>[7];
    for (int k = 0; k < 7; k++)
        CHECK(aligned_to(&arr[k], A), "new Over<%zu>[7]: element %d at %p not aligned", A, k,
              static_cast<void*>(&arr[k]));
    CHECK(arr[6].bytes[A - 1] == 0x5a, "Over<%zu> contents", A);
    Over<A>* nt = new (std::nothrow) Over<A>;
    CHECK(nt && aligned_to(nt, A), "new (nothrow) Over<%zu> = %p", A, static_cast<void*>(nt));
    Over<A>* nta = new (std::nothrow) Over<A>[3];
    CHECK(nta && aligned_to(nta, A), "new (nothrow) Over<%zu>[3] = %p", A, static_cast<void*>(nta));
    CHECK(Over<A>::live == 12, "Over<%zu>: %ld live, want 12", A, Over<A>::live.load());
    delete one;  // aligned (sized) delete
    delete[] arr;
    delete nt;
    delete[] nta;
    CHECK(Over<A>::live == 0, "Over<%zu>: %ld live after delete", A, Over<A>::live.load());
    auto u = std::make_unique<Over<A>[]>(5);
    CHECK(aligned_to(u.get(), A), "make_unique<Over<%zu>[]>", A);
    auto s = std::make_shared<Over<A>>();
    CHECK(aligned_to(s.get(), A), "make_shared<Over<%zu>> = %p", A, static_cast<void*>(s.get()));
    std::vector<Over<A>> v(9);
    CHECK(aligned_to(v.data(), A), "vector<Over<%zu>> data %p", A, static_cast<void*>(v.data()));
}

static void aligned_forms() {
    over_aligned_type<32>();
    over_aligned_type<64>();
    over_aligned_type<256>();
    over_aligned_type<4096>();
    for (size_t a = 16; a <= (size_t(64) << 20); a *= 2) {
        std::align_val_t al{a};
        for (size_t n : {size_t(1), size_t(100), a, a + 1, size_t(5000)}) {
            void* p = ::operator new(n, al);
            CHECK(aligned_to(p, a), "operator new(%zu, align %zu) = %p", n, a, p);
            fill_check(p, n, n ^ a, "aligned operator new");
            ::operator delete(p, n, al);  // sized aligned
            void* q = ::operator new[](n, al);
            CHECK(aligned_to(q, a), "operator new[](%zu, align %zu) = %p", n, a, q);
            fill_check(q, n, n ^ a ^ 1, "aligned operator new[]");
            ::operator delete[](q, n, al);
            void* r = ::operator new(n, al, std::nothrow);
            CHECK(r && aligned_to(r, a), "operator new(%zu, align %zu, nothrow) = %p", n, a, r);
            if (r) fill_check(r, n, n ^ a ^ 2, "aligned nothrow operator new");
            ::operator delete(r, al, std::nothrow);
            void* s = ::operator new[](n, al, std::nothrow);
            CHECK(s && aligned_to(s, a), "operator new[](%zu, align %zu, nothrow) = %p", n, a, s);
            if (s) fill_check(s, n, n ^ a ^ 3, "aligned nothrow operator new[]");
            ::operator delete[](s, al, std::nothrow);
            void* t = ::operator new(n, al);
            ::operator delete(t, al);  // unsized aligned
            void* u = ::operator new[](n, al);
            ::operator delete[](u, al);
        }
    }
}

// ---- out of memory ----

static void bad_alloc_thrown() {
    size_t huge = opaque(SIZE_MAX / 2);
    bool caught = false;
    try {
        char* p = new char[huge];
        CHECK(false, "new char[SIZE_MAX / 2] returned %p", static_cast<void*>(p));
        delete[] p;
    } catch (const std::bad_alloc&) {
        caught = true;
    }
    CHECK(caught, "new char[SIZE_MAX / 2] did not throw bad_alloc");
    for (size_t n : {opaque(SIZE_MAX), opaque(SIZE_MAX / 2), opaque(size_t(1) << 47)}) {
        caught = false;
        try {
            void* p = ::operator new(n);
            CHECK(false, "operator new(%#zx) returned %p", n, p);
        } catch (const std::bad_alloc&) {
            caught = true;
        }
        CHECK(caught, "operator new(%#zx) did not throw bad_alloc", n);
        caught = false;
        try {
            void* p = ::operator new[](n);
            CHECK(false, "operator new[](%#zx) returned %p", n, p);
        } catch (const std::bad_alloc&) {
            caught = true;
        }
        CHECK(caught, "operator new[](%#zx) did not throw bad_alloc", n);
        CHECK(::operator new(n, std::nothrow) == nullptr, "operator new(%#zx, nothrow) is not nullptr", n);
        CHECK(::operator new[](n, std::nothrow) == nullptr, "operator new[](%#zx, nothrow) is not nullptr", n);
    }
    char* nt = new (std::nothrow) char[huge];
    CHECK(nt == nullptr, "new (nothrow) char[SIZE_MAX / 2] = %p", static_cast<void*>(nt));
    // A vector that cannot grow: length_error or bad_alloc, and the vector is intact.
    std::vector<char> v(100, 'x');
    caught = false;
    try {
        v.reserve(opaque(size_t(1) << 62));
    } catch (const std::bad_alloc&) {
        caught = true;
    } catch (const std::length_error&) {
        caught = true;
    }
    CHECK(caught && v.size() == 100 && v[99] == 'x', "vector::reserve(2^62)");
}

// Aligned forms of impossible sizes (the size rounded up to the alignment overflows).
static void aligned_impossible() {
    for (size_t a : {size_t(32), size_t(64), size_t(4096), size_t(1) << 20}) {
        std::align_val_t al{a};
        for (size_t n : {opaque(SIZE_MAX), opaque(SIZE_MAX - a / 2), opaque(SIZE_MAX / 2 + 1)}) {
            bool caught = false;
            void* p = nullptr;
            try {
                p = ::operator new(n, al);
            } catch (const std::bad_alloc&) {
                caught = true;
            }
            CHECK(caught, "operator new(%#zx, align %zu) returned %p (usable size %zu) instead of throwing bad_alloc",
                  n, a, p, p && usable ? usable(p) : 0);
            void* q = ::operator new[](n, al, std::nothrow);
            CHECK(q == nullptr, "operator new[](%#zx, align %zu, nothrow) returned %p (usable size %zu), not nullptr",
                  n, a, q, q && usable ? usable(q) : 0);
        }
    }
}

// ---- new-handlers ----

static int handler_calls = 0;

static void uninstalling_handler() {
    if (++handler_calls == 3) std::set_new_handler(nullptr);
}

static void throwing_handler() {
    if (++handler_calls == 2) throw std::bad_alloc();
}

static void new_handlers() {
    size_t huge = opaque(SIZE_MAX / 4);
    // A handler that is called until it uninstalls itself: then new throws.
    handler_calls = 0;
    std::set_new_handler(uninstalling_handler);
    bool caught = false;
    try {
        void* p = ::operator new(huge);
        CHECK(false, "operator new(huge) returned %p", p);
    } catch (const std::bad_alloc&) {
        caught = true;
    }
    CHECK(caught && handler_calls == 3, "uninstalling handler: caught %d, %d calls (want 3)", caught, handler_calls);
    CHECK(std::get_new_handler() == nullptr, "the handler did not uninstall itself");
    // The same with array and aligned new.
    handler_calls = 0;
    std::set_new_handler(uninstalling_handler);
    caught = false;
    try {
        char* p = new char[huge];
        delete[] p;
    } catch (const std::bad_alloc&) {
        caught = true;
    }
    CHECK(caught && handler_calls == 3, "new char[huge] with handler: caught %d, %d calls", caught, handler_calls);
    handler_calls = 0;
    std::set_new_handler(uninstalling_handler);
    caught = false;
    try {
        void* p = ::operator new(huge, std::align_val_t(256));
        ::operator delete(p, std::align_val_t(256));
    } catch (const std::bad_alloc&) {
        caught = true;
    }
    CHECK(caught && handler_calls == 3, "aligned new with handler: caught %d, %d calls", caught, handler_calls);
    // A handler that throws bad_alloc itself.
    handler_calls = 0;
    std::set_new_handler(throwing_handler);
    caught = false;
    try {
        void* p = ::operator new[](huge);
        CHECK(false, "operator new[](huge) returned %p", p);
    } catch (const std::bad_alloc&) {
        caught = true;
    }
    CHECK(caught && handler_calls == 2, "throwing handler: caught %d, %d calls (want 2)", caught, handler_calls);
    std::set_new_handler(nullptr);
    // nothrow new with a handler that uninstalls itself: the handler runs, then nullptr.
    handler_calls = 0;
    std::set_new_handler(uninstalling_handler);
    void* p = ::operator new(huge, std::nothrow);
    CHECK(p == nullptr && handler_calls == 3, "nothrow new with handler: %p, %d calls (want nullptr, 3)", p,
          handler_calls);
    std::set_new_handler(nullptr);
    // Allocation still works afterwards.
    std::string s(1000, 'y');
    CHECK(s[999] == 'y', "allocation after the handlers");
}

// The standard: nothrow new calls the throwing new and returns nullptr if it throws.
static void nothrow_throwing_handler() {
    handler_calls = 0;
    std::set_new_handler(throwing_handler);
    void* p = reinterpret_cast<void*>(1);
    try {
        p = ::operator new(opaque(SIZE_MAX / 4), std::nothrow);
    } catch (const std::bad_alloc&) {
        CHECK(false, "operator new(huge, nothrow) let the new-handler's bad_alloc escape (it must return nullptr)");
    }
    CHECK(p == nullptr || p == reinterpret_cast<void*>(1), "operator new(huge, nothrow) returned %p", p);
    std::set_new_handler(nullptr);
}

// ---- the STL from several threads ----

struct ExitWork {
    // A C++ thread_local with a destructor that allocates at thread exit.
    std::vector<std::string>* v = nullptr;
    ~ExitWork() {
        std::vector<std::string> tmp;
        for (int i = 0; i < 50; i++) tmp.push_back(std::string(40 + i, char('a' + i % 26)));
        std::map<int, std::string> m;
        for (int i = 0; i < 20; i++) m[i] = tmp[i];
        exit_dtors++;
        if (v) {
            if (v->size() != 100 || (*v)[99] != std::string(99, 'q')) exit_bad++;
            delete v;
        }
    }
    static std::atomic<int> exit_dtors, exit_bad;
};
std::atomic<int> ExitWork::exit_dtors{0};
std::atomic<int> ExitWork::exit_bad{0};
static thread_local ExitWork exit_work;

struct Mailbox {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::shared_ptr<std::vector<uint64_t>>> q;
    bool closed = false;
};

static uint64_t sum(const std::vector<uint64_t>& v) {
    uint64_t s = 0;
    for (uint64_t x : v) s += x;
    return s;
}

static std::atomic<long> stl_errors{0}, shared_received{0};

static void stl_worker(int id, Mailbox* out, Mailbox* in, int rounds) {
    exit_work.v = new std::vector<std::string>();
    for (int i = 0; i < 100; i++) exit_work.v->push_back(std::string(i, 'q'));
    std::map<int, std::string> m;
    std::unordered_map<std::string, std::vector<int>> um;
    for (int r = 0; r < rounds; r++) {
        std::vector<std::string> strs;
        for (int i = 0; i < 200; i++) strs.push_back(std::to_string(id) + ":" + std::to_string(r * 1000 + i) +
                                                    std::string(size_t(i % 50), 'z'));
        for (int i = 0; i < 200; i += 3) m[r * 1000 + i] = strs[size_t(i)];
        um[strs[size_t(r % 200)]].push_back(r);
        if (m.size() > 2000) m.erase(m.begin(), std::next(m.begin(), 1000));
        // Exceptions allocate through __cxa_allocate_exception.
        try {
            if (r % 10 == 0) throw std::runtime_error(std::string(100, 'e'));
        } catch (const std::runtime_error& e) {
            if (std::strlen(e.what()) != 100) stl_errors++;
        }
        // Send a vector to the next thread; its last reference is dropped there.
        auto v = std::make_shared<std::vector<uint64_t>>(size_t(100 + r % 500));
        for (size_t k = 0; k < v->size(); k++) (*v)[k] = uint64_t(id) * 1000003 + k;
        v->push_back(sum(*v));
        {
            std::lock_guard<std::mutex> g(out->m);
            out->q.push_back(std::move(v));
        }
        out->cv.notify_one();
        // Receive what the previous thread sent.
        std::deque<std::shared_ptr<std::vector<uint64_t>>> got;
        {
            std::lock_guard<std::mutex> g(in->m);
            got.swap(in->q);
        }
        for (auto& g : got) {
            uint64_t expect = g->back();
            g->pop_back();
            if (sum(*g) != expect) stl_errors++;
            shared_received++;
        }
    }
    for (auto& kv : um)
        if (kv.second.empty()) stl_errors++;
}

static void stl_threads() {
    const int n = 4, rounds = 300;
    std::vector<Mailbox> boxes(n);
    for (int gen = 0; gen < 3; gen++) {
        std::vector<std::thread> ts;
        for (int i = 0; i < n; i++) ts.emplace_back(stl_worker, i, &boxes[size_t((i + 1) % n)], &boxes[size_t(i)], rounds);
        for (auto& t : ts) t.join();
    }
    long left = 0;
    for (auto& b : boxes) {
        for (auto& g : b.q) {
            uint64_t expect = g->back();
            g->pop_back();
            if (sum(*g) != expect) stl_errors++;
            left++;
        }
        b.q.clear();
    }
    CHECK(stl_errors == 0, "%ld errors in the STL threads", stl_errors.load());
    CHECK(shared_received + left == 3L * n * rounds, "%ld + %ld shared vectors received, want %d",
          shared_received.load(), left, 3 * n * rounds);
    CHECK(ExitWork::exit_dtors == 3 * n, "%d thread_local destructors ran, want %d", ExitWork::exit_dtors.load(),
          3 * n);
    CHECK(ExitWork::exit_bad == 0, "%d thread_local objects had lost their contents", ExitWork::exit_bad.load());
}

int main(int argc, char** argv) {
    bool require = false;
    const char* which = "main";
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--require-mallard") == 0) require = true;
        else which = argv[i];
    }
    usable = reinterpret_cast<size_t (*)(const void*)>(dlsym(RTLD_DEFAULT, "mallard_usable_size"));
    std::printf("# cxx %s on %s\n", which, usable ? "mallard" : "the default allocator");
    if (require) {
        CHECK(usable != nullptr, "mallard is not loaded");
        require_mallard();
    }
    double t0 = now_s();
    if (std::strcmp(which, "main") == 0) {
        plain_forms();
        aligned_forms();
        bad_alloc_thrown();
        new_handlers();
        stl_threads();
    } else if (std::strcmp(which, "aligned-impossible") == 0) {
        aligned_impossible();
    } else if (std::strcmp(which, "nothrow-throwing-handler") == 0) {
        nothrow_throwing_handler();
    } else {
        std::fprintf(stderr, "unknown case %s\n", which);
        return 2;
    }
    std::printf("%s cxx %s: %d failures, %.2f s\n", failures ? "FAIL" : "ok", which, failures, now_s() - t0);
    return failures ? 1 : 0;
}

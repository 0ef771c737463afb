/* The recorder's hooks into how a program ends (libmallard_trace.so only; see trace.rs).
 *
 * (`_exit` and `_Exit`, which run no atexit handler, are wrapped in exit.rs.)
 * - The `exec` family: the trace of the image being replaced is written before the call (and
 *   recording resumes if the call fails). The variadic forms are here because Rust cannot
 *   define them.
 * - Fatal signals: for every signal whose default action ends the process, and which the
 *   program leaves at the default, a handler writes the trace and raises the signal again
 *   with the default action. The program must not see the difference: `sigaction` and
 *   `signal` are wrapped so that such a signal still reads as SIG_DFL, and installing a
 *   handler of the program's own replaces ours (setting SIG_DFL again puts ours back).
 *
 * libc's own functions are looked up once, at start-up (`mallard_trace_hooks_init`), so that
 * no wrapper calls the dynamic loader later (an exec may come from a child of vfork). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void mallard_trace_end(void);
void mallard_trace_resume(void);

extern char **environ;

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);
typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static execve_fn real_execve;
static execve_fn real_execvpe;
static fexecve_fn real_fexecve;
static execveat_fn real_execveat;
static sigaction_fn real_sigaction;

/* The signals whose default action ends the process (SIGKILL and SIGSTOP cannot be caught). */
static const int fatal_signals[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGILL,  SIGTRAP, SIGABRT, SIGBUS,
                                    SIGFPE,  SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM,
                                    SIGXCPU, SIGXFSZ, SIGSYS,  SIGVTALRM, SIGPROF};
#define NSIGNALS 65
/* Whether our handler stands in for the default action of a signal. */
static atomic_int held[NSIGNALS];

static int is_fatal(int sig) {
    for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++)
        if (fatal_signals[i] == sig) return 1;
    return 0;
}

static void on_fatal(int sig, siginfo_t *info, void *context) {
    (void)info;
    (void)context;
    int saved = errno;
    /* SA_RESETHAND has put the default action back. */
    atomic_store(&held[sig], 0);
    mallard_trace_end();
    errno = saved;
    /* Blocked while the handler runs: delivered, with the default action, when it returns (a
     * fault would also come again from the same instruction). */
    raise(sig);
}

/* Puts our handler in place of the default action of `sig`. */
static void hold(int sig) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_fatal;
    act.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK | SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (real_sigaction(sig, &act, NULL) == 0) atomic_store(&held[sig], 1);
}

void mallard_trace_hooks_init(void) {
    real_execve = (execve_fn)dlsym(RTLD_NEXT, "execve");
    real_execvpe = (execve_fn)dlsym(RTLD_NEXT, "execvpe");
    real_fexecve = (fexecve_fn)dlsym(RTLD_NEXT, "fexecve");
    real_execveat = (execveat_fn)dlsym(RTLD_NEXT, "execveat");
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (!real_sigaction) return;
    for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++) {
        struct sigaction old;
        int sig = fatal_signals[i];
        if (real_sigaction(sig, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL)
            hold(sig);
    }
}

int __mallard_trace_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) {
        real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
        if (!real_sigaction) {
            errno = ENOSYS;
            return -1;
        }
    }
    if (sig > 0 && sig < NSIGNALS && atomic_load(&held[sig])) {
        if (act && act->sa_handler != SIG_DFL) {
            int r = real_sigaction(sig, act, NULL);
            if (r != 0) return r;
            atomic_store(&held[sig], 0);
        }
        if (old) {
            memset(old, 0, sizeof *old);
            old->sa_handler = SIG_DFL;
        }
        return 0;
    }
    int r = real_sigaction(sig, act, old);
    if (r == 0 && act && !(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_DFL && is_fatal(sig)) hold(sig);
    return r;
}

/* BSD semantics, as glibc's `signal`: the signal blocked in its handler, calls restarted. */
sighandler_t __mallard_trace_signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    if (sig > 0 && sig < NSIGNALS) sigaddset(&act.sa_mask, sig);
    act.sa_flags = SA_RESTART;
    if (__mallard_trace_sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

sighandler_t __mallard_trace_bsd_signal(int sig, sighandler_t handler) { return __mallard_trace_signal(sig, handler); }

/* Runs one exec: the trace written before, recording resumed if it fails. */
#define EXEC(call)                         \
    do {                                   \
        mallard_trace_end();               \
        int r_ = (call);                   \
        int e_ = errno;                    \
        mallard_trace_resume();            \
        errno = e_;                        \
        return r_;                         \
    } while (0)

static int no_function(void) {
    errno = ENOSYS;
    return -1;
}

int __mallard_trace_execve(const char *path, char *const argv[], char *const envp[]) {
    EXEC(real_execve ? real_execve(path, argv, envp) : (int)syscall(SYS_execve, path, argv, envp));
}

int __mallard_trace_execv(const char *path, char *const argv[]) { return __mallard_trace_execve(path, argv, environ); }

int __mallard_trace_execvpe(const char *file, char *const argv[], char *const envp[]) {
    EXEC(real_execvpe ? real_execvpe(file, argv, envp) : no_function());
}

int __mallard_trace_execvp(const char *file, char *const argv[]) { return __mallard_trace_execvpe(file, argv, environ); }

int __mallard_trace_fexecve(int fd, char *const argv[], char *const envp[]) {
    EXEC(real_fexecve ? real_fexecve(fd, argv, envp) : no_function());
}

int __mallard_trace_execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
    EXEC(real_execveat ? real_execveat(dirfd, path, argv, envp, flags)
                       : (int)syscall(SYS_execveat, dirfd, path, argv, envp, flags));
}

/* The arguments of an execl-style call, after `first`, up to the NULL: their count. */
static size_t count_args(const char *first, va_list ap) {
    size_t n = 1;
    if (!first) return 0;
    while (va_arg(ap, const char *)) n++;
    return n;
}

#define COLLECT(argv, first, last)                        \
    va_list ap;                                           \
    va_start(ap, last);                                   \
    size_t n_ = count_args(first, ap);                    \
    va_end(ap);                                           \
    char *argv[n_ + 1];                                   \
    va_start(ap, last);                                   \
    argv[0] = (char *)(first);                            \
    for (size_t i_ = 1; i_ <= n_; i_++) argv[i_] = va_arg(ap, char *); \
    argv[n_] = NULL

int __mallard_trace_execl(const char *path, const char *arg, ...) {
    COLLECT(argv, arg, arg);
    va_end(ap);
    return __mallard_trace_execve(path, argv, environ);
}

int __mallard_trace_execlp(const char *file, const char *arg, ...) {
    COLLECT(argv, arg, arg);
    va_end(ap);
    return __mallard_trace_execvpe(file, argv, environ);
}

int __mallard_trace_execle(const char *path, const char *arg, ...) {
    COLLECT(argv, arg, arg);
    /* After the NULL: the environment. */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return __mallard_trace_execve(path, argv, envp);
}

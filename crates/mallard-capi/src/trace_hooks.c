/* The recorder's hooks into how a program ends (libmallard_trace.so only; see trace.rs).
 *
 * (`_exit` and `_Exit`, which run no atexit handler, are wrapped in exit.rs.)
 * - The `exec` family and `daemon`: the events of the image being replaced (or of the parent
 *   that `daemon` ends) are written before the call; recording goes on if it fails. The variadic forms are here because Rust cannot
 *   define them.
 * - Fatal signals: for every signal whose default action ends the process, and which the
 *   program leaves at the default, a handler writes the trace and raises the signal again
 *   with the default action. The program must not see the difference: `sigaction`, `signal`,
 *   `bsd_signal`, `sysv_signal`, `sigset` and `siginterrupt` are wrapped so that such a signal
 *   still reads as SIG_DFL, and installing a handler of the program's own replaces ours
 *   (setting SIG_DFL again puts ours back). A raw `rt_sigaction` system call (Go, musl) sees
 *   ours.
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
void mallard_trace_flush(void);

extern char **environ;

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);
typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
typedef int (*daemon_fn)(int, int);

static execve_fn real_execve;
static execve_fn real_execvpe;
static fexecve_fn real_fexecve;
static execveat_fn real_execveat;
static sigaction_fn real_sigaction;
static daemon_fn real_daemon;

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

/* Set by the first fatal signal's handler: the trace is being written. */
static atomic_int ending;

static void on_fatal(int sig, siginfo_t *info, void *context) {
    (void)info;
    (void)context;
    if (atomic_exchange(&ending, 1)) {
        /* Another thread got a fatal signal first and is writing the trace; it ends the
         * process when done (a second SIGTERM must not kill it half-way). */
        for (;;) pause();
    }
    int saved = errno;
    mallard_trace_end();
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    real_sigaction(sig, &dfl, NULL);
    atomic_store(&held[sig], 0);
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
    /* Every signal blocked while it writes (a second SIGTERM must not kill it half-way); not on
     * the program's alternate stack, which may be too small for it (MINSIGSTKSZ). */
    act.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&act.sa_mask);
    if (real_sigaction(sig, &act, NULL) == 0) atomic_store(&held[sig], 1);
}

void mallard_trace_hooks_init(void) {
    real_execve = (execve_fn)dlsym(RTLD_NEXT, "execve");
    real_execvpe = (execve_fn)dlsym(RTLD_NEXT, "execvpe");
    real_fexecve = (fexecve_fn)dlsym(RTLD_NEXT, "fexecve");
    real_execveat = (execveat_fn)dlsym(RTLD_NEXT, "execveat");
    real_daemon = (daemon_fn)dlsym(RTLD_NEXT, "daemon");
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

/* System V semantics: the handler is reset on entry and the signal not blocked in it. */
sighandler_t __mallard_trace_sysv_signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    act.sa_flags = SA_RESETHAND | SA_NODEFER;
    if (__mallard_trace_sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

/* The disposition, and SIG_HOLD: the signal blocked (or, for any other disposition,
 * unblocked); the result is SIG_HOLD if it was blocked before. */
sighandler_t __mallard_trace_sigset(int sig, sighandler_t disp) {
    sigset_t set, was;
    struct sigaction act, old;
    if (sig <= 0 || sig >= NSIGNALS) {
        errno = EINVAL;
        return SIG_ERR;
    }
    sigemptyset(&set);
    sigaddset(&set, sig);
    if (disp == SIG_HOLD) {
        if (__mallard_trace_sigaction(sig, NULL, &old) != 0 || sigprocmask(SIG_BLOCK, &set, &was) != 0)
            return SIG_ERR;
    } else {
        memset(&act, 0, sizeof act);
        act.sa_handler = disp;
        sigemptyset(&act.sa_mask);
        if (__mallard_trace_sigaction(sig, &act, &old) != 0 || sigprocmask(SIG_UNBLOCK, &set, &was) != 0)
            return SIG_ERR;
    }
    return sigismember(&was, sig) ? SIG_HOLD : old.sa_handler;
}

/* Whether the signal interrupts system calls: SA_RESTART off (flag 1) or on (flag 0). */
int __mallard_trace_siginterrupt(int sig, int flag) {
    struct sigaction act;
    if (__mallard_trace_sigaction(sig, NULL, &act) != 0) return -1;
    if (flag)
        act.sa_flags &= ~SA_RESTART;
    else
        act.sa_flags |= SA_RESTART;
    return __mallard_trace_sigaction(sig, &act, NULL);
}

/* The parent leaves through glibc's own _exit, which no wrapper sees: its trace is written
 * first (the child goes on in FILE.PID). */
int __mallard_trace_daemon(int nochdir, int noclose) {
    mallard_trace_flush();
    if (!real_daemon) {
        errno = ENOSYS;
        return -1;
    }
    return real_daemon(nochdir, noclose);
}

/* Runs one exec, every thread's events written before it (recording goes on if it fails). */
#define EXEC(call)              \
    do {                        \
        mallard_trace_flush();  \
        return (call);          \
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

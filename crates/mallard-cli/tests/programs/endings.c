/* For `mallard record`'s tests: the ways a program ends, each of which must leave every event
 * it made in the trace. `endings MODE` allocates blocks of a size no one else asks for, keeps
 * them (so nothing is freed that a test might miss) and ends as MODE says:
 *
 *   thread-alive  a worker makes 3000 blocks of 4242 bytes and is still running when main returns
 *   fork-_exit    a child made by fork makes 77 blocks of 3131 bytes and leaves with _exit
 *   abort         55 blocks of 2727 bytes, then abort()
 *   segv          55 blocks of 2727 bytes, then a write through a null pointer
 *   term          55 blocks of 2727 bytes, then SIGTERM from kill()
 *   exec          33 blocks of 1919 bytes, then execl of `/bin/sh -c 'exit 7'`
 *   getattr       pthread_getattr_np on the main thread before anything else (glibc allocates
 *                 inside it, holding a lock), then 11 blocks of 1111 bytes
 *   signals       prints the dispositions the program sees: SIGINT and SIGTERM must read as
 *                 SIG_DFL, and a handler of its own must run
 *   quick-exit    22 blocks of 2323 bytes, then quick_exit(5)
 *   daemon        17 blocks of 1717 bytes, then daemon(): the parent ends inside it
 *   closefds      closes descriptors 3 to 1023, writes "hello" to a file of its own (argv[2]),
 *                 then 40 blocks of 2121 bytes: the file must hold "hello" alone
 *   cancel        a thread with a cancel pending makes and frees 1000 blocks, then returns 42:
 *                 malloc and free are no cancellation points
 *   exec-fails    2 threads make and free 20000 blocks of 5020 bytes each while main calls
 *                 execv on a missing file 200 times
 *   fsize         a file size limit of 64 KiB, then 200000 blocks of 16 bytes made and freed
 *   unlink-trace  removes its own trace file (MALLARD_TRACE) and exits with 3
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

static void *volatile keep[4000];
static sem_t made;

static void make(int n, size_t size) {
    for (int i = 0; i < n; i++) keep[i] = malloc(size);
}

static void *worker(void *arg) {
    (void)arg;
    make(3000, 4242);
    sem_post(&made);
    for (;;) pause();
    return NULL;
}

static void *churn(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        void *volatile p = malloc(5020);
        free(p);
    }
    return NULL;
}

static void *cancelled(void *arg) {
    (void)arg;
    pthread_cancel(pthread_self());
    for (int i = 0; i < 1000; i++) {
        void *volatile p = malloc(100);
        free(p);
    }
    return (void *)42;
}

static volatile sig_atomic_t got;
static void on_usr1(int sig) { got = sig; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "thread-alive")) {
        pthread_t t;
        sem_init(&made, 0, 0);
        pthread_create(&t, NULL, worker, NULL);
        sem_wait(&made);
        return 0;
    }
    if (!strcmp(mode, "fork-_exit")) {
        pid_t child = fork();
        if (child == 0) {
            make(77, 3131);
            _exit(0);
        }
        int status;
        waitpid(child, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
    }
    if (!strcmp(mode, "abort") || !strcmp(mode, "segv") || !strcmp(mode, "term")) {
        make(55, 2727);
        if (!strcmp(mode, "abort")) abort();
        if (!strcmp(mode, "term")) kill(getpid(), SIGTERM);
        *(volatile int *)(keep[4000 - 1]) = 1; /* keep[3999] is null */
        return 0;
    }
    if (!strcmp(mode, "exec")) {
        make(33, 1919);
        execl("/bin/sh", "sh", "-c", "exit 7", (char *)NULL);
        return 98;
    }
    if (!strcmp(mode, "getattr")) {
        pthread_attr_t a;
        if (pthread_getattr_np(pthread_self(), &a) != 0) return 97;
        pthread_attr_destroy(&a);
        make(11, 1111);
        return 0;
    }
    if (!strcmp(mode, "signals")) {
        struct sigaction old;
        sigaction(SIGINT, NULL, &old);
        printf("SIGINT %s\n", old.sa_handler == SIG_DFL ? "default" : "changed");
        void (*was)(int) = signal(SIGTERM, SIG_IGN);
        printf("SIGTERM %s\n", was == SIG_DFL ? "default" : "changed");
        signal(SIGTERM, SIG_DFL);
        signal(SIGUSR1, on_usr1);
        raise(SIGUSR1);
        printf("SIGUSR1 %s\n", got == SIGUSR1 ? "handled" : "lost");
        sigaction(SIGUSR1, NULL, &old);
        printf("SIGUSR1 handler %s\n", old.sa_handler == on_usr1 ? "ours" : "other");
        void (*before)(int) = sigset(SIGHUP, SIG_IGN);
        sigaction(SIGHUP, NULL, &old);
        printf("sigset SIGHUP %s, then %s\n", before == SIG_DFL ? "default" : "changed",
               old.sa_handler == SIG_IGN ? "ignored" : "other");
        return 0;
    }
    if (!strcmp(mode, "quick-exit")) {
        make(22, 2323);
        quick_exit(5);
    }
    if (!strcmp(mode, "daemon")) {
        make(17, 1717);
        if (daemon(1, 1) != 0) return 96;
        _exit(0);
    }
    if (!strcmp(mode, "closefds") && argc > 2) {
        for (int fd = 3; fd < 1024; fd++) close(fd);
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, "hello\n", 6) != 6) return 95;
        make(40, 2121);
        close(fd);
        return 0;
    }
    if (!strcmp(mode, "cancel")) {
        pthread_t t;
        void *r = NULL;
        pthread_create(&t, NULL, cancelled, NULL);
        pthread_join(t, &r);
        printf("%s\n", r == (void *)42 ? "returned" : "cancelled");
        return 0;
    }
    if (!strcmp(mode, "exec-fails")) {
        pthread_t t[2];
        char *args[] = {"missing", NULL};
        for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, churn, NULL);
        for (int i = 0; i < 200; i++) execv("/nonexistent/program", args);
        for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
        return 0;
    }
    if (!strcmp(mode, "fsize")) {
        struct rlimit lim = {64 << 10, 64 << 10};
        setrlimit(RLIMIT_FSIZE, &lim);
        for (int i = 0; i < 200000; i++) {
            void *volatile p = malloc(16);
            free(p);
        }
        printf("done\n");
        return 0;
    }
    if (!strcmp(mode, "unlink-trace")) {
        const char *t = getenv("MALLARD_TRACE");
        if (t) unlink(t);
        return 3;
    }
    fprintf(stderr, "endings: unknown mode %s\n", mode);
    return 2;
}

/* For `mallard record`'s test: 4 threads each allocate and free 1000 blocks (and free 100
 * blocks of 808 bytes the main thread made), then the process forks a child that allocates 10 blocks of
 * its own. Every block is freed. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void *handed[4][100];

static void *work(void *arg) {
    long t = (long)arg;
    void *mine[1000];
    for (int i = 0; i < 1000; i++) mine[i] = malloc(16 + (size_t)(i % 50) * 8);
    for (int i = 0; i < 1000; i++) free(mine[i]);
    for (int i = 0; i < 100; i++) free(handed[t][i]); /* blocks of another thread */
    return NULL;
}

int main(void) {
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 100; i++) handed[t][i] = malloc(808);
    for (long t = 0; t < 4; t++) pthread_create(&th[t], NULL, work, (void *)t);
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    pid_t child = fork();
    if (child == 0) {
        void *p[10];
        for (int i = 0; i < 10; i++) p[i] = malloc(1000);
        for (int i = 0; i < 10; i++) free(p[i]);
        exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 3 : 1;
}

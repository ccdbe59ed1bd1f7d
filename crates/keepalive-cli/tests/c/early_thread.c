/* A library whose constructor starts a thread that makes a TCP socket, and joins it: loaded
 * with dlopen from another constructor, its constructor runs while the dynamic loader's lock
 * is held, so a hook in that thread must not take the lock (dlsym does). Prints
 * "thread socket=N keepalive=K". */
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static void *make(void *arg) {
    (void)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int on = -1;
    socklen_t len = sizeof on;
    getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    printf("thread socket=%d keepalive=%d\n", s >= 0, on);
    fflush(stdout);
    close(s);
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    pthread_t t;
    pthread_create(&t, NULL, make, NULL);
    pthread_join(t, NULL);
}

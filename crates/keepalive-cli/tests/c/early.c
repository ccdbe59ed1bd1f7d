/* A preloaded library whose constructor makes a TCP socket, as a tracing or monitoring library
 * might: the loader may run it before the shim's constructor. Prints what the socket holds:
 * "early keepalive=K idle=I". With EARLY_THREADS=N, the constructor also starts N threads
 * that make 2000 sockets each while it makes its own, joins them, and prints
 * "early threads without keepalive: M". With EARLY_DLOPEN=PATH, the constructor first
 * dlopens PATH (early_thread.c). */
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int keepalive_of(int s) {
    int on = -1;
    socklen_t len = sizeof on;
    getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    return on;
}

static void *sockets(void *arg) {
    long without = 0;
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (keepalive_of(s) != 1)
            without++;
        close(s);
    }
    return (void *)without;
}

__attribute__((constructor)) static void early(void) {
    const char *lib = getenv("EARLY_DLOPEN");
    if (lib && !dlopen(lib, RTLD_NOW))
        printf("dlopen failed: %s\n", dlerror());
    const char *threads = getenv("EARLY_THREADS");
    int n = threads ? atoi(threads) : 0;
    pthread_t t[16];
    if (n > 16)
        n = 16;
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, sockets, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int idle = -1;
    socklen_t len = sizeof idle;
    getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
    printf("early keepalive=%d idle=%d\n", keepalive_of(s), idle);
    close(s);
    if (n > 0) {
        long without = 0;
        for (int i = 0; i < n; i++) {
            void *r;
            pthread_join(t[i], &r);
            without += (long)r;
        }
        printf("early threads without keepalive: %ld\n", without);
    }
    fflush(stdout);
}

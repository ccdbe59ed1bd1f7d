/* Stress for the LD_PRELOAD shim: THREADS threads each create and close SOCKETS sockets of
 * mixed kinds. Every TCP socket must come out with SO_KEEPALIVE on, nothing else may, errno
 * must be what the caller left, and no descriptor may leak.
 * Usage: stress THREADS SOCKETS. Prints one summary line; exit 0 when every check held. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static long per_thread;
static long bad_keepalive, bad_errno, tcp_count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int open_fds(void) {
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1) n++;
    return n;
}

static void *work(void *arg) {
    long seed = (long)arg, bk = 0, be = 0, tcp = 0;
    static const int kinds[][3] = {
        {AF_INET, SOCK_STREAM, 0},  {AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0},
        {AF_INET, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP}, {AF_INET, SOCK_DGRAM, 0},
        {AF_UNIX, SOCK_STREAM, 0},  {AF_INET6, SOCK_DGRAM, 0},
    };
    for (long i = 0; i < per_thread; i++) {
        const int *k = kinds[(i + seed) % 6];
        errno = 4242;
        int fd = socket(k[0], k[1], k[2]);
        if (fd < 0) { perror("socket"); exit(2); }
        if (errno != 4242) be++;
        int on = -1; socklen_t len = sizeof on;
        getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
        int is_tcp = (k[0] == AF_INET || k[0] == AF_INET6) && (k[1] & 0xf) == SOCK_STREAM;
        tcp += is_tcp;
        if (on != is_tcp) bk++;
        close(fd);
    }
    pthread_mutex_lock(&lock);
    bad_keepalive += bk; bad_errno += be; tcp_count += tcp;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: stress THREADS SOCKETS\n"); return 2; }
    int threads = atoi(argv[1]);
    per_thread = atol(argv[2]);
    int before = open_fds();
    pthread_t t[64];
    for (long i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    int after = open_fds();
    printf("sockets=%ld tcp=%ld bad_keepalive=%ld bad_errno=%ld fds_before=%d fds_after=%d\n",
           threads * per_thread, tcp_count, bad_keepalive, bad_errno, before, after);
    return (bad_keepalive || bad_errno || before != after) ? 1 : 0;
}

/* Benchmark loops for the LD_PRELOAD shims.
 *   sockloop socket N [floor]   socket()+close() N times
 *   sockloop connect N [floor]  loopback connect/accept/close N times (closed with RST)
 * "floor" makes the program set SO_KEEPALIVE, TCP_KEEPIDLE=30, TCP_KEEPINTVL=10, TCP_KEEPCNT=5
 * itself on every socket: the same system calls a shim makes, with no hook in between.
 * Prints: ns_per_op=... (process CPU time) keepalive=K idle=I (K and I read back from one socket first, to show
 * the variant really applied a policy). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int floor_mode;

static void own_policy(int fd) {
    int on = 1, idle = 30, intvl = 10, cnt = 5;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { perror("socket"); exit(1); }
    if (floor_mode) own_policy(fd);
    return fd;
}

/* CPU time (user + system) this process has used, in ns: on a shared machine it moves less
 * than wall time, which also counts time the process waited for a CPU. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: sockloop socket|connect N [floor]\n"); return 2; }
    long n = atol(argv[2]);
    floor_mode = argc > 3 && strcmp(argv[3], "floor") == 0;

    int probe = tcp_socket(), on = 0, idle = 0;
    socklen_t len = sizeof on;
    getsockopt(probe, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    len = sizeof idle;
    getsockopt(probe, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
    close(probe);

    double start, end;
    if (strcmp(argv[1], "socket") == 0) {
        start = now();
        for (long i = 0; i < n; i++) close(tcp_socket());
        end = now();
    } else {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 128)) { perror("listen"); return 1; }
        socklen_t alen = sizeof a;
        getsockname(l, (struct sockaddr *)&a, &alen);
        start = now();
        for (long i = 0; i < n; i++) {
            int c = tcp_socket();
            if (connect(c, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
            int s = accept(l, NULL, NULL);
            if (s < 0) { perror("accept"); return 1; }
            /* Close with RST (linger 0): no TIME_WAIT piles up to slow later connects down as the
             * ephemeral ports fill, which would swamp what is being measured. */
            struct linger rst = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
            close(c);
            close(s);
        }
        end = now();
    }
    printf("ns_per_op=%.1f keepalive=%d idle=%d\n", (end - start) / n, on, idle);
    return 0;
}

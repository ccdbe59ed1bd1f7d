/* Benchmark loops for the LD_PRELOAD shims.
 *   sockloop socket N [floor]   socket()+close() N times
 *   sockloop connect N [floor]  loopback connect/accept/close N times (closed with RST)
 * "floor" makes the program set SO_KEEPALIVE, TCP_KEEPIDLE=30, TCP_KEEPINTVL=10, TCP_KEEPCNT=5
 * itself on every socket: the same system calls a shim makes, with no hook in between.
 * "floor-both" also sets them on every accepted socket: what a program that wants keepalive on both
 * ends of its connections does, and what a mechanism acting on every connection must match.
 * Prints: ns_per_op=... (process CPU time) keepalive=K idle=I (K and I read back from one socket first, to show
 * the variant really applied a policy), wall_ns_per_op=... (elapsed time: what a program waits, including work
 * done for it in another process, such as a seccomp supervisor's), and in connect mode conn=K/I,K/I: SO_KEEPALIVE
 * and TCP_KEEPIDLE of the first connection's client and accepted sockets (mechanisms that act at connect() or at
 * ESTABLISHED show only there). */
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

static int floor_mode, floor_accepted;

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

static double wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void seen(int fd, int *on, int *idle) {
    socklen_t len = sizeof *on;
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, on, &len);
    len = sizeof *idle;
    getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle, &len);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: sockloop socket|connect N [floor]\n"); return 2; }
    long n = atol(argv[2]);
    floor_mode = argc > 3 && strncmp(argv[3], "floor", 5) == 0;
    floor_accepted = argc > 3 && strcmp(argv[3], "floor-both") == 0;

    int probe = tcp_socket(), on = 0, idle = 0;
    seen(probe, &on, &idle);
    close(probe);
    int conn[4] = {0, 0, 0, 0};

    double start, end, wstart;
    if (strcmp(argv[1], "socket") == 0) {
        start = now();
        wstart = wall();
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
        wstart = wall();
        for (long i = 0; i < n; i++) {
            int c = tcp_socket();
            if (connect(c, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
            int s = accept(l, NULL, NULL);
            if (s < 0) { perror("accept"); return 1; }
            if (floor_accepted) own_policy(s);
            if (i == 0) {
                seen(c, &conn[0], &conn[1]);
                seen(s, &conn[2], &conn[3]);
            }
            /* Close with RST (linger 0): no TIME_WAIT piles up to slow later connects down as the
             * ephemeral ports fill, which would swamp what is being measured. */
            struct linger rst = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
            close(c);
            close(s);
        }
        end = now();
    }
    double wend = wall();
    printf("ns_per_op=%.1f keepalive=%d idle=%d wall_ns_per_op=%.1f conn=%d/%d,%d/%d\n", (end - start) / n, on, idle,
           (wend - wstart) / n, conn[0], conn[1], conn[2], conn[3]);
    return 0;
}

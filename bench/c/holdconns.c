/* Holds N loopback TCP connections open (2N sockets) until stdin closes, for benchmarks that
 * list or change many sockets. A process may hold only so many descriptors (RLIMIT_NOFILE's
 * hard limit, which raising needs CAP_SYS_RESOURCE), so the connections are split over child
 * processes of at most 9,000 connections each; with N <= 9000 everything is in this process.
 * Each process spreads its connections over 16 listening ports so that ephemeral ports never
 * run out. Prints "ready PID" (this process) once all are up. Usage: holdconns N */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { PORTS = 16, CHUNK = 9000 };

static int hold(long n) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    struct sockaddr_in addr[PORTS];
    int listener[PORTS];
    for (int p = 0; p < PORTS; p++) {
        listener[p] = socket(AF_INET, SOCK_STREAM, 0);
        addr[p] = (struct sockaddr_in){.sin_family = AF_INET};
        addr[p].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr[p];
        if (bind(listener[p], (struct sockaddr *)&addr[p], len) || listen(listener[p], 4096)) { perror("listen"); return 1; }
        getsockname(listener[p], (struct sockaddr *)&addr[p], &len);
    }
    for (long i = 0; i < n; i++) {
        int p = i % PORTS, c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&addr[p], sizeof addr[p])) { perror("connect"); return 1; }
        if (accept(listener[p], NULL, NULL) < 0) { perror("accept"); return 1; }
    }
    for (int p = 0; p < PORTS; p++) close(listener[p]);
    return 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    int ready[2];
    if (pipe(ready)) return 1;
    int children = 0;
    while (n > CHUNK) {
        pid_t kid = fork();
        if (kid == 0) {
            close(ready[0]);
            if (hold(CHUNK)) _exit(1);
            if (write(ready[1], "k", 1) != 1) _exit(1);
            char buf[64];
            while (read(0, buf, sizeof buf) > 0) {}
            _exit(0);
        }
        children++;
        n -= CHUNK;
    }
    close(ready[1]);
    if (hold(n)) return 1;
    for (int i = 0; i < children; i++) {
        char c;
        if (read(ready[0], &c, 1) != 1) { fprintf(stderr, "a child failed\n"); return 1; }
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {}
    while (wait(NULL) > 0) {}
    return 0;
}

/* Counts heap allocations made while sockets are created, connected, configured and accepted
 * under the shim. The program replaces malloc and friends with counting wrappers around glibc's
 * own (__libc_malloc...), which the dynamic linker then uses for every library in the process,
 * the shim included. Usage: nomalloc PORT [selftest] (PORT: a listener the test runs; selftest
 * allocates inside the loop, to show the counter counts). Prints the count; exit 0 when the
 * loop allocated nothing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static volatile long counting, count;

void *malloc(size_t n) { if (counting) count++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (counting) count++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (counting) count++; return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { if (counting) count++; return __libc_memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n) { if (counting) count++; *p = __libc_memalign(a, n); return *p ? 0 : 12; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int selftest = argc > 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = {.sin_family = AF_INET};
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(l, (struct sockaddr *)&any, sizeof any);
    listen(l, 16);
    socklen_t alen = sizeof any;
    getsockname(l, (struct sockaddr *)&any, &alen);
    counting = 1;
    for (int i = 0; i < 2000; i++) {
        int s = socket(i % 2 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
        close(s);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        int v = 0;
        connect(c, (struct sockaddr *)(i % 2 ? &a : &any), sizeof a);
        setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
        if (selftest) free(malloc(16));
        if (i % 2 == 0) close(accept(l, NULL, NULL));
        close(c);
    }
    counting = 0;
    printf("allocations=%ld\n", count);
    return count == 0 ? 0 : 1;
}

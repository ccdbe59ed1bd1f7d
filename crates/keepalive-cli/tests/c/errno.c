/* errno as the caller left it, through hooks that made setsockopt calls of their own.
 * Usage: errno CLOSED_PORT OPEN_PORT, run with --ports covering both.
 * Prints one line per check; exit 0 when all hold. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in addr(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int keepalive_on(int fd) {
    int on = 0; socklen_t len = sizeof on;
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    return on;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int failures = 0;
    /* A refused blocking connect: errno must still say ECONNREFUSED, and the socket, left
     * unconnected, gets no policy from it (the program may connect it elsewhere). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in closed = addr(atoi(argv[1]));
    int rc = connect(fd, (struct sockaddr *)&closed, sizeof closed);
    int e = errno;
    printf("refused connect: rc=%d errno=%s keepalive=%d\n", rc, strerror(e), keepalive_on(fd));
    failures += !(rc == -1 && e == ECONNREFUSED && !keepalive_on(fd));
    close(fd);
    /* A non-blocking connect: EINPROGRESS (or 0) must come through untouched. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in open_ = addr(atoi(argv[2]));
    errno = 0;
    rc = connect(fd, (struct sockaddr *)&open_, sizeof open_);
    e = errno;
    printf("non-blocking connect: rc=%d errno=%s keepalive=%d\n", rc, strerror(e), keepalive_on(fd));
    failures += !((rc == 0 || e == EINPROGRESS) && keepalive_on(fd));
    close(fd);
    /* A setsockopt the shim passes through keeps the real result and errno. */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    int v = 5;
    errno = 0;
    rc = setsockopt(fd, IPPROTO_TCP, 4 /* TCP_KEEPIDLE */, &v, sizeof v);
    e = errno;
    printf("setsockopt TCP_KEEPIDLE on UDP: rc=%d errno=%s\n", rc, strerror(e));
    failures += !(rc == -1 && e == ENOPROTOOPT);
    close(fd);
    return failures ? 1 : 0;
}

/* A program that closes its standard descriptors and reuses them as sockets: fd 0 connects to
 * the test's listener (argv[1] is the port), fds 1 and 2 are more TCP sockets, and the program
 * keeps trying to switch keepalive off. Run in force mode with logging on: whatever the shim
 * logs must not land on any of them, so the listener must read nothing. Exit 0 when fd 0 was
 * the connection and kept keepalive on. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    close(0); close(1); close(2);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd != 0) return 3;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return 4;
    int one = socket(AF_INET, SOCK_STREAM, 0), two = socket(AF_INET6, SOCK_STREAM, 0);
    if (one != 1 || two != 2) return 5;
    int v = 0;
    for (int i = 0; i < 100; i++) {
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
        setsockopt(one, IPPROTO_TCP, TCP_KEEPIDLE, &i, sizeof i);
    }
    int on = 0; socklen_t len = sizeof on;
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    usleep(200000);
    return on == 1 ? 0 : 6;
}

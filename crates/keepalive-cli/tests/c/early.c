/* A preloaded library whose constructor makes a TCP socket, as a tracing or monitoring library
 * might: the loader may run it before the shim's constructor. Prints what the socket holds:
 * "early keepalive=K idle=I". */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((constructor)) static void early(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int on = -1, idle = -1;
    socklen_t len = sizeof on;
    getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    len = sizeof idle;
    getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
    printf("early keepalive=%d idle=%d\n", on, idle);
    fflush(stdout);
    close(s);
}

/* Makes one TCP socket and prints "SO_KEEPALIVE TCP_KEEPIDLE" as the kernel reports them. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int on = -1, idle = -1;
    socklen_t len = sizeof on;
    getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    len = sizeof idle;
    getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
    printf("%d %d\n", on, idle);
    return 0;
}

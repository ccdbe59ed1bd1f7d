/* Fork and exec chains under the shim: at every depth the process makes a TCP socket (which
 * must have SO_KEEPALIVE on), forks a child that makes one without exec, and execs itself one
 * level down. Usage: forkexec DEPTH. Exit 0 when every socket at every level had keepalive. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int check(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), on = 0;
    socklen_t len = sizeof on;
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len);
    close(fd);
    return on == 1;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 0;
    if (!check()) { fprintf(stderr, "depth %d: no keepalive\n", depth); return 1; }
    pid_t kid = fork();
    if (kid == 0) _exit(check() ? 0 : 1);
    int status = 0;
    waitpid(kid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "forked child failed\n"); return 1; }
    if (depth == 0) return 0;
    pid_t next = fork();
    if (next == 0) {
        char arg[16];
        snprintf(arg, sizeof arg, "%d", depth - 1);
        execl(argv[0], argv[0], arg, (char *)NULL);
        _exit(127);
    }
    waitpid(next, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

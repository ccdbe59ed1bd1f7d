/* Runs /usr/bin/env (which prints its environ as it is) with an environment that holds
 * LD_PRELOAD twice: first OTHER, then SHIM (the loader takes the last), and
 * KEEPALIVE_POLICY=inherit=no. Usage: dupenv SHIM OTHER. What env prints is the environment
 * the shim left for the program's children. */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dupenv SHIM OTHER\n");
        return 2;
    }
    char first[4096], second[4096];
    snprintf(first, sizeof first, "LD_PRELOAD=%s", argv[2]);
    snprintf(second, sizeof second, "LD_PRELOAD=%s", argv[1]);
    char *env[] = {first, "KEEPALIVE_POLICY=inherit=no", second, "PATH=/usr/bin:/bin", NULL};
    char *args[] = {"env", NULL};
    execve("/usr/bin/env", args, env);
    perror("execve");
    return 127;
}

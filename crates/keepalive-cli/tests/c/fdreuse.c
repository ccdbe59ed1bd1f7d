/* Descriptor numbers reused behind the shim's back, and descriptors duplicated in front of it.
 * Run under the shim with KEEPALIVE_POLICY=idle=30,mode=force (or dest=127.0.0.0/8 for the
 * "udp" case). Prints one line per check, "ok NAME" or "FAIL NAME: why", and exits 1 if any
 * check failed.
 *
 *   fdreuse force     the force-mode checks
 *   fdreuse udp       the dest= check, and a program's own choice before connect()
 *   fdreuse threads   16 threads reusing numbers as files, counting wrong successes
 *   fdreuse racing    force mode: a thread frees numbers with close_range while the main
 *                     thread makes managed sockets; a vfork child closes the parent's socket
 *   fdreuse leader    force mode, after the main thread has exited: the kernel's refusals
 *                     still reach the program
 *   fdreuse bind      ports=1-65535: bind with AF_UNSPEC gets the policy
 *   fdreuse seccomp   force mode under a filter that kills on process_vm_readv
 *   fdreuse dupforce  dest=127.0.0.1/32,mode=force: a duplicate made before the filtered
 *                     connect is guarded once the policy went on through the other number
 *   fdreuse dupchoice dest=127.0.0.1/32: values set through a duplicate before connect are
 *                     the program's choice, which the filter leaves alone
 *   fdreuse fastopen  dest=127.0.0.1/32: TCP Fast Open (sendto/sendmsg with MSG_FASTOPEN,
 *                     no connect) to 127.0.0.1 gets the policy, to 127.0.0.2 does not
 *   fdreuse badsend   Fast Open sends the kernel refuses before it reads the message header
 *                     (a bad descriptor, a file, MSG_CMSG_COMPAT) with an unreadable header:
 *                     the kernel's error, no crash
 *   fdreuse refused   dest=127.0.0.2/32: a refused connect to a matching peer leaves no
 *                     policy on a socket the program then connects elsewhere
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MSG_CMSG_COMPAT
#define MSG_CMSG_COMPAT 0x80000000 /* the kernel's, include/linux/socket.h */
#endif

static int failed;

static int listener(const char *ip, struct sockaddr_in *at);

static void check(int ok, const char *name, const char *why) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: %s (errno %d)\n", name, why, errno);
        failed = 1;
    }
}

static int get_int(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len) != 0)
        return -1;
    return v;
}

static int set_int(int fd, int level, int name, int v) {
    return setsockopt(fd, level, name, &v, sizeof v);
}

/* A TCP socket made through the shim, closed with a raw system call the shim does not see:
 * its number is free again, and the shim's mark for it is stale. */
static int shim_socket_closed_behind_its_back(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    syscall(SYS_close, fd);
    return fd;
}

static void force_checks(void) {
    /* 1. A file on a reused number is no socket: setsockopt says ENOTSOCK. */
    int was = shim_socket_closed_behind_its_back();
    int file = open("/dev/null", O_RDONLY);
    errno = 0;
    int rc = set_int(file, SOL_SOCKET, SO_KEEPALIVE, 0);
    check(file == was && rc == -1 && errno == ENOTSOCK, "file-on-reused-number",
          "setsockopt on a file did not fail with ENOTSOCK");
    close(file);

    /* The same after a close() the shim saw. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    close(s);
    file = open("/dev/null", O_RDONLY);
    errno = 0;
    rc = set_int(file, SOL_SOCKET, SO_KEEPALIVE, 0);
    check(file == s && rc == -1 && errno == ENOTSOCK, "file-after-close",
          "setsockopt on a file did not fail with ENOTSOCK");
    close(file);

    /* 2. A TCP socket made by a raw system call on a reused number is the program's: its own
     * SO_KEEPALIVE=1 and idle=5 stand. */
    was = shim_socket_closed_behind_its_back();
    int raw = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    set_int(raw, SOL_SOCKET, SO_KEEPALIVE, 1);
    set_int(raw, IPPROTO_TCP, TCP_KEEPIDLE, 5);
    check(raw == was && get_int(raw, SOL_SOCKET, SO_KEEPALIVE) == 1 &&
              get_int(raw, IPPROTO_TCP, TCP_KEEPIDLE) == 5,
          "raw-socket-on-reused-number", "the program's own values were swallowed");
    /* and its SO_KEEPALIVE=0 goes through too */
    set_int(raw, SOL_SOCKET, SO_KEEPALIVE, 0);
    check(get_int(raw, SOL_SOCKET, SO_KEEPALIVE) == 0, "raw-socket-off",
          "the program's SO_KEEPALIVE=0 was swallowed");
    syscall(SYS_close, raw);

    /* 3. Duplicates of a managed socket are the same socket: force mode guards them. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    check(get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
          "policy-applied", "the shim's policy is not on the socket");
    int d1 = dup(s);
    int d2 = dup2(s, 100);
    int d3 = dup3(s, 101, O_CLOEXEC);
    int d4 = fcntl(s, F_DUPFD_CLOEXEC, 200);
    int dups[] = {d1, d2, d3, d4};
    const char *names[] = {"dup", "dup2", "dup3", "fcntl-dupfd"};
    for (int i = 0; i < 4; i++) {
        set_int(dups[i], SOL_SOCKET, SO_KEEPALIVE, 0);
        set_int(dups[i], IPPROTO_TCP, TCP_KEEPIDLE, 7);
        check(dups[i] >= 0 && get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1 &&
                  get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
              names[i], "a duplicate let the program change an option the policy owns");
    }
    /* fcntl's other commands pass through with their argument */
    int flags = fcntl(s, F_GETFL);
    check(fcntl(s, F_SETFL, flags | O_NONBLOCK) == 0 && (fcntl(s, F_GETFL) & O_NONBLOCK),
          "fcntl-setfl", "F_SETFL did not pass through");
    for (int i = 0; i < 4; i++)
        close(dups[i]);
    close(s);

    /* 3b. Calls the kernel refuses for their arguments are refused as without the shim: an
     * unmapped pointer (EFAULT), values out of the kernel's range (EINVAL), a short length. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    struct {
        const char *name;
        int level, opt, value, err;
    } bad[] = {
        {"keepidle-0", IPPROTO_TCP, TCP_KEEPIDLE, 0, EINVAL},
        {"keepidle-32768", IPPROTO_TCP, TCP_KEEPIDLE, 32768, EINVAL},
        {"keepintvl-negative", IPPROTO_TCP, TCP_KEEPINTVL, -1, EINVAL},
        {"keepcnt-128", IPPROTO_TCP, TCP_KEEPCNT, 128, EINVAL},
        {"user-timeout-negative", IPPROTO_TCP, TCP_USER_TIMEOUT, -5, EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        rc = set_int(s, bad[i].level, bad[i].opt, bad[i].value);
        check(rc == -1 && errno == bad[i].err, bad[i].name, "the kernel's refusal was swallowed");
    }
    errno = 0;
    rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, (void *)8, sizeof(int));
    check(rc == -1 && errno == EFAULT, "unmapped-pointer", "an unmapped pointer was not EFAULT");
    int zero = 0;
    errno = 0;
    rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &zero, 2);
    check(rc == -1 && errno == EINVAL, "short-length", "a 2-byte value was not EINVAL");
    /* A length the kernel's int takes for negative: EINVAL. */
    errno = 0;
    rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &zero, (socklen_t)0x80000000u);
    check(rc == -1 && errno == EINVAL, "negative-length", "a negative length was swallowed");
    errno = 0;
    rc = setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &zero, (socklen_t)0xffffffffu);
    check(rc == -1 && errno == EINVAL, "length-minus-one", "length -1 was swallowed");
    check(get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
          "policy-after-refusals", "a refused call changed the policy's options");
    /* SO_KEEPALIVE's argument is judged on TCP_KEEPCNT: the count stays as it was. */
    int before = get_int(s, IPPROTO_TCP, TCP_KEEPCNT);
    int seven = 7;
    rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &seven, sizeof seven);
    check(rc == 0 && get_int(s, IPPROTO_TCP, TCP_KEEPCNT) == before &&
              get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1,
          "keepalive-judged-count-kept", "judging SO_KEEPALIVE's argument changed TCP_KEEPCNT");
    /* and a valid value in range is still kept from the kernel */
    errno = 0;
    rc = set_int(s, IPPROTO_TCP, TCP_KEEPIDLE, 32767);
    check(rc == 0 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30, "keepidle-in-range-kept",
          "a valid value went through or failed");
    close(s);

    /* 4. dup2 over a managed socket's number with a file: the file is no socket. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    file = open("/dev/null", O_RDONLY);
    dup2(file, s);
    errno = 0;
    rc = set_int(s, SOL_SOCKET, SO_KEEPALIVE, 0);
    check(rc == -1 && errno == ENOTSOCK, "dup2-file-over-socket",
          "setsockopt on the file dup2'd over a socket did not fail with ENOTSOCK");
    close(file);
    close(s);

    /* 5. close_range frees numbers too. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    close_range(s, s, 0);
    file = open("/dev/null", O_RDONLY);
    errno = 0;
    rc = set_int(file, SOL_SOCKET, SO_KEEPALIVE, 0);
    check(file == s && rc == -1 && errno == ENOTSOCK, "close-range",
          "setsockopt on a file after close_range did not fail with ENOTSOCK");
    close(file);
}

static void udp_check(void) {
    /* dest=127.0.0.0/8: a UDP socket made by a raw system call on a reused number is not TCP,
     * and connect() must not give it SO_KEEPALIVE. */
    int was = shim_socket_closed_behind_its_back();
    int udp = syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(udp, (struct sockaddr *)&a, sizeof a);
    check(udp == was && get_int(udp, SOL_SOCKET, SO_KEEPALIVE) == 0, "udp-on-reused-number",
          "connect() gave a UDP socket SO_KEEPALIVE");
    syscall(SYS_close, udp);

    /* An address the kernel cannot read: connect and bind fail with EFAULT, as without the
     * shim, whose dest= filter must not read it itself (that was a SIGSEGV in the hook). */
    void *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *bad[] = {none, (void *)8};
    for (int i = 0; i < 2; i++) {
        int t = socket(AF_INET, SOCK_STREAM, 0);
        errno = 0;
        int rc = connect(t, (struct sockaddr *)bad[i], sizeof(struct sockaddr_in));
        check(rc == -1 && errno == EFAULT, i ? "connect-pointer-8" : "connect-prot-none",
              "connect with an unreadable address did not fail with EFAULT");
        errno = 0;
        rc = bind(t, (struct sockaddr *)bad[i], sizeof(struct sockaddr_in6));
        check(rc == -1 && errno == EFAULT, i ? "bind-pointer-8" : "bind-prot-none",
              "bind with an unreadable address did not fail with EFAULT");
        close(t);
    }

    /* RFC 2133's 24-byte sockaddr_in6 (no scope id), which the kernel takes: the policy goes
     * on a matching v4-mapped peer. (The connects below go to a listener: a refused connect
     * gets no policy.) */
    struct sockaddr_in at;
    int l = listener("127.0.0.1", &at);
    a = at;
    int six = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = at.sin_port};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &a6.sin6_addr);
    connect(six, (struct sockaddr *)&a6, 24);
    check(get_int(six, SOL_SOCKET, SO_KEEPALIVE) == 1, "sockaddr-in6-24-bytes",
          "a 24-byte sockaddr_in6 to a matching peer did not get the policy");
    close(six);

    /* A keepalive option the kernel refused set nothing, and TCP_USER_TIMEOUT turns no
     * keepalive on: neither is the program's choice, and connect() applies the policy. */
    int refused = socket(AF_INET, SOCK_STREAM, 0);
    set_int(refused, IPPROTO_TCP, TCP_KEEPIDLE, 0);
    connect(refused, (struct sockaddr *)&a, sizeof a);
    check(get_int(refused, SOL_SOCKET, SO_KEEPALIVE) == 1, "refused-option-is-no-choice",
          "a setsockopt the kernel refused kept the policy off");
    close(refused);
    int ut = socket(AF_INET, SOCK_STREAM, 0);
    set_int(ut, IPPROTO_TCP, TCP_USER_TIMEOUT, 5000);
    connect(ut, (struct sockaddr *)&a, sizeof a);
    check(get_int(ut, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(ut, IPPROTO_TCP, TCP_USER_TIMEOUT) == 5000,
          "user-timeout-is-no-choice", "TCP_USER_TIMEOUT alone kept the policy off");
    close(ut);

    /* The same choice made through a duplicate taken before it (the duplicate's mark is its
     * own): the socket itself says keepalive is on, and connect() leaves it. */
    int orig = socket(AF_INET, SOCK_STREAM, 0);
    int twin = dup(orig);
    set_int(twin, SOL_SOCKET, SO_KEEPALIVE, 1);
    set_int(twin, IPPROTO_TCP, TCP_KEEPIDLE, 60);
    connect(orig, (struct sockaddr *)&a, sizeof a);
    check(get_int(orig, IPPROTO_TCP, TCP_KEEPIDLE) == 60, "choice-through-a-duplicate",
          "connect() overwrote a choice made through a duplicate");
    close(twin);
    close(orig);

    /* A program that chose its own keepalive before connecting keeps it (default mode): curl
     * --keepalive-time 5, socat keepidle=5. The options were set before the connect. */
    int own = socket(AF_INET, SOCK_STREAM, 0);
    set_int(own, SOL_SOCKET, SO_KEEPALIVE, 1);
    set_int(own, IPPROTO_TCP, TCP_KEEPIDLE, 5);
    connect(own, (struct sockaddr *)&a, sizeof a);
    check(get_int(own, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(own, IPPROTO_TCP, TCP_KEEPIDLE) == 5,
          "own-choice-before-connect", "connect() overwrote the program's own keepalive values");
    close(own);
    int off = socket(AF_INET, SOCK_STREAM, 0);
    set_int(off, SOL_SOCKET, SO_KEEPALIVE, 0);
    connect(off, (struct sockaddr *)&a, sizeof a);
    check(get_int(off, SOL_SOCKET, SO_KEEPALIVE) == 0, "own-off-before-connect",
          "connect() turned on keepalive the program had turned off");
    close(off);
    /* One that chose nothing gets the policy. */
    int plain = socket(AF_INET, SOCK_STREAM, 0);
    connect(plain, (struct sockaddr *)&a, sizeof a);
    check(get_int(plain, SOL_SOCKET, SO_KEEPALIVE) == 1, "policy-at-connect",
          "a matching connect() did not get the policy");
    close(plain);
    close(l);
}

static volatile int stop_closing;

static void *close_range_loop(void *arg) {
    (void)arg;
    while (!stop_closing) {
        int f = open("/dev/null", O_RDONLY);
        close_range(f, f, 0);
    }
    return NULL;
}

static void racing_checks(void) {
    pthread_t t;
    pthread_create(&t, NULL, close_range_loop, NULL);
    long lost = 0;
    for (int i = 0; i < 50000; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        set_int(s, SOL_SOCKET, SO_KEEPALIVE, 0);
        if (get_int(s, SOL_SOCKET, SO_KEEPALIVE) != 1)
            lost++;
        close(s);
    }
    stop_closing = 1;
    pthread_join(t, NULL);
    char why[80];
    snprintf(why, sizeof why, "%ld of 50000 managed sockets lost their guard", lost);
    check(lost == 0, "close-range-race", why);

    /* A vfork child shares the shim's memory but not the descriptors: its close must not
     * take the parent's guard away. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    pid_t child = vfork();
    if (child == 0) {
        close(s);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    set_int(s, SOL_SOCKET, SO_KEEPALIVE, 0);
    set_int(s, IPPROTO_TCP, TCP_KEEPIDLE, 7);
    check(get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
          "vfork-child-close", "the child's close took the parent's guard away");
    close(s);
}

/* Force mode in a thread that outlives the main thread (pthread_exit in main): the process's
 * id then names a zombie, and the shim must still see what the kernel would refuse. */
static void *after_leader(void *arg) {
    (void)arg;
    sleep(1);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    int rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, (void *)8, sizeof(int));
    check(rc == -1 && errno == EFAULT, "leader-gone-efault", "an unreadable value was swallowed");
    errno = 0;
    rc = set_int(s, IPPROTO_TCP, TCP_KEEPIDLE, 0);
    check(rc == -1 && errno == EINVAL, "leader-gone-einval", "an out-of-range value was swallowed");
    rc = set_int(s, IPPROTO_TCP, TCP_KEEPIDLE, 9);
    check(rc == 0 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30, "leader-gone-guarded",
          "a valid value was not kept from the kernel");
    fflush(stdout);
    exit(failed);
}

/* ports=1-65535: bind() with AF_UNSPEC and INADDR_ANY, which the kernel takes as AF_INET on
 * an IPv4 socket, gets the policy for the port it bound. */
static void bind_check(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_UNSPEC, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    int rc = bind(s, (struct sockaddr *)&a, sizeof a);
    check(rc == 0 && get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1, "bind-af-unspec",
          "bind with AF_UNSPEC did not get the policy");
    close(s);
}

/* A seccomp filter that kills the process on process_vm_readv (an allowlist that leaves it
 * out does the same): the shim makes no such call, in force mode and under a filter. */
static void seccomp_check(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        check(0, "seccomp-installed", "could not install the filter");
        return;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int zero = 0;
    int rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &zero, sizeof zero);
    check(rc == 0 && get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1, "seccomp-force-kept",
          "force mode did not keep the policy");
    errno = 0;
    rc = setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, (void *)8, sizeof(int));
    check(rc == -1 && errno == EFAULT, "seccomp-force-efault", "a bad pointer was swallowed");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(s, (struct sockaddr *)&a, sizeof a);
    close(s);
    check(1, "seccomp-alive", "");
}

static long wrong;

static void *reuse_loop(void *arg) {
    (void)arg;
    long mine = 0;
    for (int i = 0; i < 5000; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        syscall(SYS_close, s);
        int file = open("/dev/null", O_RDONLY);
        errno = 0;
        if (set_int(file, SOL_SOCKET, SO_KEEPALIVE, 0) == 0 || errno != ENOTSOCK)
            mine++;
        close(file);
    }
    __atomic_add_fetch(&wrong, mine, __ATOMIC_RELAXED);
    return NULL;
}

/* A listener on 127.0.0.1 (or `ip`) on a port the kernel picks, with Fast Open allowed. */
static int listener(const char *ip, struct sockaddr_in *at) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int qlen = 8;
    setsockopt(l, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof qlen);
    memset(at, 0, sizeof *at);
    at->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &at->sin_addr);
    socklen_t len = sizeof *at;
    if (bind(l, (struct sockaddr *)at, sizeof *at) != 0 || listen(l, 8) != 0 ||
        getsockname(l, (struct sockaddr *)at, &len) != 0) {
        check(0, "listener", "could not listen on loopback");
        exit(1);
    }
    return l;
}

static void dup_force_check(void) {
    struct sockaddr_in at;
    int l = listener("127.0.0.1", &at);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int d = dup(s);
    int d2 = fcntl(s, F_DUPFD_CLOEXEC, 100);
    check(connect(s, (struct sockaddr *)&at, sizeof at) == 0 &&
              get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
          "dupforce-policy", "the filtered connect did not apply the policy");
    int zero = 0;
    int rc = setsockopt(d, SOL_SOCKET, SO_KEEPALIVE, &zero, sizeof zero);
    check(rc == 0 && get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1, "dupforce-dup-guarded",
          "SO_KEEPALIVE=0 through a duplicate made before connect switched keepalive off");
    rc = set_int(d2, IPPROTO_TCP, TCP_KEEPIDLE, 5);
    check(rc == 0 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30, "dupforce-fcntl-guarded",
          "TCP_KEEPIDLE=5 through an F_DUPFD duplicate replaced the policy");
    close(d2);
    close(d);
    close(s);
    close(l);
}

static void dup_choice_check(void) {
    struct sockaddr_in at;
    int l = listener("127.0.0.1", &at);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int d = dup(s);
    check(set_int(d, IPPROTO_TCP, TCP_KEEPIDLE, 5) == 0, "dupchoice-set", "setsockopt failed");
    check(connect(s, (struct sockaddr *)&at, sizeof at) == 0 &&
              get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 5 &&
              get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 0,
          "dupchoice-kept", "the filter overrode values the program set through a duplicate");
    close(d);
    close(s);
    close(l);
}

static void fast_open_check(void) {
    struct sockaddr_in at, other;
    int l = listener("127.0.0.1", &at);
    int l2 = listener("127.0.0.2", &other);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n = sendto(s, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&at, sizeof at);
    check(n >= 0 || errno == EINPROGRESS, "fastopen-sendto-sent", "sendto failed");
    check(get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(s, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
          "fastopen-sendto", "a Fast Open sendto to a matching peer got no policy");
    int m = socket(AF_INET, SOCK_STREAM, 0);
    struct iovec iov = {.iov_base = "y", .iov_len = 1};
    struct msghdr msg = {.msg_name = &at, .msg_namelen = sizeof at, .msg_iov = &iov,
                         .msg_iovlen = 1};
    n = sendmsg(m, &msg, MSG_FASTOPEN);
    check(n >= 0 || errno == EINPROGRESS, "fastopen-sendmsg-sent", "sendmsg failed");
    check(get_int(m, SOL_SOCKET, SO_KEEPALIVE) == 1 && get_int(m, IPPROTO_TCP, TCP_KEEPIDLE) == 30,
          "fastopen-sendmsg", "a Fast Open sendmsg to a matching peer got no policy");
    int o = socket(AF_INET, SOCK_STREAM, 0);
    n = sendto(o, "z", 1, MSG_FASTOPEN, (struct sockaddr *)&other, sizeof other);
    check(n >= 0 || errno == EINPROGRESS, "fastopen-other-sent", "sendto failed");
    check(get_int(o, SOL_SOCKET, SO_KEEPALIVE) == 0, "fastopen-other",
          "a Fast Open send to a peer outside dest= got the policy");
    errno = 12345;
    n = sendto(s, "w", 1, 0, NULL, 0);
    check(errno == 12345 || n < 0, "fastopen-errno", "a plain send changed errno");
    close(o);
    close(m);
    close(s);
    close(l2);
    close(l);
}

static void bad_send_check(void) {
    void *bad = (void *)8;
    int file = open("/dev/null", O_RDONLY);
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    struct {
        int fd, flags, err;
        const char *name;
    } cases[] = {
        {-1, MSG_FASTOPEN, EBADF, "badsend-ebadf"},
        {file, MSG_FASTOPEN, ENOTSOCK, "badsend-enotsock"},
        {tcp, MSG_FASTOPEN | MSG_CMSG_COMPAT, EINVAL, "badsend-compat"},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        ssize_t n = sendmsg(cases[i].fd, bad, cases[i].flags);
        check(n == -1 && errno == cases[i].err, cases[i].name, "sendmsg's errno changed");
        errno = 0;
        int m = sendmmsg(cases[i].fd, bad, 1, cases[i].flags);
        check(m == -1 && errno == cases[i].err, cases[i].name, "sendmmsg's errno changed");
    }
    close(tcp);
    close(file);
}

static void refused_check(void) {
    struct sockaddr_in at, closed;
    int l = listener("127.0.0.1", &at);
    /* A port on 127.0.0.2 nobody listens on: bind one, take its number, close it. */
    int gone = listener("127.0.0.2", &closed);
    close(gone);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(s, (struct sockaddr *)&closed, sizeof closed);
    check(rc == -1 && errno == ECONNREFUSED, "refused-refused", "the connect was not refused");
    check(get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 0, "refused-no-policy",
          "a refused connect to a matching peer put the policy on");
    rc = connect(s, (struct sockaddr *)&at, sizeof at);
    check(rc == 0 && get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 0, "refused-then-elsewhere",
          "the socket connected to a peer outside dest= holds the policy");
    close(s);
    close(l);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "badsend") == 0) {
        bad_send_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "refused") == 0) {
        refused_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "dupforce") == 0) {
        dup_force_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "dupchoice") == 0) {
        dup_choice_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "fastopen") == 0) {
        fast_open_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "bind") == 0) {
        bind_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "seccomp") == 0) {
        seccomp_check();
        return failed;
    }
    if (argc > 1 && strcmp(argv[1], "leader") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, after_leader, NULL);
        pthread_exit(NULL);
    }
    if (argc > 1 && strcmp(argv[1], "force") == 0) {
        force_checks();
    } else if (argc > 1 && strcmp(argv[1], "udp") == 0) {
        udp_check();
    } else if (argc > 1 && strcmp(argv[1], "racing") == 0) {
        racing_checks();
    } else if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        pthread_t t[16];
        for (int i = 0; i < 16; i++)
            pthread_create(&t[i], NULL, reuse_loop, NULL);
        for (int i = 0; i < 16; i++)
            pthread_join(t[i], NULL);
        char why[64];
        snprintf(why, sizeof why, "%ld of 80000 calls on a file succeeded", wrong);
        errno = 0;
        check(wrong == 0, "threads", why);
    } else {
        fprintf(stderr, "usage: fdreuse force|udp|threads|racing|leader|bind|seccomp|dupforce|dupchoice|fastopen|badsend|refused\n");
        return 2;
    }
    return failed;
}

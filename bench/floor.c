/*
 * floor: what the kernel allows for fan-out on this machine, with no server at all.
 *
 *   floor N ROUNDS FRAMES_PER_WRITE SENDER_CPU READER_CPU
 *
 * Opens N loopback TCP connections (127.0.0.1 only). A child process pinned to READER_CPU
 * reads and discards everything from the client ends (epoll, like bench/loadgen.c); this
 * process, pinned to SENDER_CPU, writes ROUNDS times to each server end, FRAMES_PER_WRITE
 * 102-byte WebSocket frames per write() (1 = one message at a time, as the steady
 * scenario; 8 or 16 = several frames coalesced per write, as a burst). It prints one JSON
 * line: write() calls per second and frames per second, i.e. the ceiling of a server
 * written in C that does nothing but fan out on this kernel and this (virtual) machine.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: floor N ROUNDS FRAMES_PER_WRITE SENDER_CPU READER_CPU\n");
        return 2;
    }
    int n = atoi(argv[1]), rounds = atoi(argv[2]), per = atoi(argv[3]);
    int sender_cpu = atoi(argv[4]), reader_cpu = atoi(argv[5]);
    if (n < 1 || n > 100000 || rounds < 1 || rounds > 100000 || per < 1 || per > 64) return 2;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) return 1;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    /* The reader connects (its fds), this process accepts (its fds): N sockets each. */
    int ready[2], done[2];
    if (pipe(ready) < 0 || pipe(done) < 0) return 1;
    pid_t child = fork();
    if (child == 0) { /* reader */
        pin(reader_cpu);
        close(lfd);
        int ep = epoll_create1(0);
        for (int i = 0; i < n; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                fprintf(stderr, "floor: connect %d: %s\n", i, strerror(errno));
                _exit(1);
            }
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        char c = 1;
        if (write(ready[1], &c, 1) != 1) _exit(1);
        uint64_t want = (uint64_t)n * (uint64_t)rounds * (uint64_t)per * 102, got = 0;
        static char buf[1 << 16];
        struct epoll_event evs[1024];
        double deadline = now_s() + 120;
        while (got < want && now_s() < deadline) {
            int k = epoll_wait(ep, evs, 1024, 100);
            for (int e = 0; e < k; e++) {
                ssize_t r = read(evs[e].data.fd, buf, sizeof buf);
                if (r > 0) got += (uint64_t)r;
            }
        }
        if (write(done[1], &got, sizeof got) != sizeof got) _exit(1);
        _exit(0);
    }
    pin(sender_cpu);
    int *sfd = calloc((size_t)n, sizeof(int));
    int one = 1;
    for (int i = 0; i < n; i++) {
        sfd[i] = accept(lfd, NULL, NULL);
        if (sfd[i] < 0) return 1;
        setsockopt(sfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    char c;
    if (read(ready[0], &c, 1) != 1) return 1;
    char frame[64 * 102];
    for (int f = 0; f < per; f++) {
        frame[f * 102] = (char)0x81; /* FIN + text */
        frame[f * 102 + 1] = 100;
        memset(frame + f * 102 + 2, 'x', 100);
    }
    double t0 = now_s();
    uint64_t writes = 0, short_writes = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++) {
            size_t len = (size_t)per * 102, off = 0;
            while (off < len) { /* blocking sockets: a full buffer waits for the reader */
                ssize_t w = write(sfd[i], frame + off, len - off);
                if (w < 0) return 1;
                if ((size_t)w < len - off) short_writes++;
                off += (size_t)w;
                writes++;
            }
        }
    }
    double sent = now_s() - t0;
    uint64_t got = 0;
    ssize_t rr = read(done[0], &got, sizeof got);
    (void)rr;
    double all = now_s() - t0;
    waitpid(child, NULL, 0);
    double frames = (double)n * rounds * per;
    printf("{\"connections\":%d,\"rounds\":%d,\"frames_per_write\":%d,\"writes_per_s\":%.0f,"
           "\"frames_per_s\":%.0f,\"send_seconds\":%.4f,\"all_received_seconds\":%.4f,"
           "\"complete\":%s}\n",
           n, rounds, per, (double)writes / sent, frames / all, sent, all,
           got == (uint64_t)frames * 102 ? "true" : "false");
    return 0;
}

/*
 * loadgen: the benchmark's load generator, one thread on one core, epoll.
 *
 * It opens N WebSocket clients to 127.0.0.1:PORT (webpubsub, or Socket.IO 4 / Engine.IO 4
 * over its websocket transport), publishes over keep-alive HTTP/1.1 connections with
 * pipelining, and counts what arrives at the clients: the receiver-side ground truth.
 *
 * --mode mqtt: the clients are MQTT 3.1.1 subscribers over WebSocket (subprotocol "mqtt"),
 * or over plain TCP with --transport tcp. Each sends CONNECT (client id s<i>, clean
 * session), then one SUBSCRIBE at QoS 0 to "all" and to its group's topic "g<group>", and
 * is ready at the SUBACK. The publishers are MQTT clients too (--pub-path: their WebSocket
 * path): a window is WINDOW QoS 1 PUBLISH packets sent in one write, to "all" or to the
 * groups' topics, and the next window leaves when every PUBACK is in (the MQTT twin of the
 * HTTP 202). Deliveries are QoS 0 (the lower of the two QoS).
 * Every payload carries a marker "@@<t_ns:20>.<sender:6>.<phase:4>." written just before
 * the publish leaves, so each delivery gives a publish-to-receive latency (CLOCK_MONOTONIC
 * is shared by all processes of the machine).
 *
 * The runner (bench/run.py) drives it with one command per line on stdin and reads one
 * JSON object per line on stdout:
 *
 *   connect                                  open all clients; handshakes/s
 *   run NAME ID SECONDS PUBS WINDOW TARGET STALL SENDERS
 *       NAME     label echoed back
 *       ID       phase id (1..9999) written into every payload of the phase
 *       SECONDS  how long new messages are issued; then drain (bounded by --drain)
 *       PUBS     HTTP publisher connections (0 for client-to-group)
 *       WINDOW   requests per publisher connection, sent together in one write; the next
 *                window leaves when all are answered (1 = one publish at a time)
 *       TARGET   all | groups (round-robin over the groups) | none
 *       STALL    1: client --stall-index stops reading for the phase (slow consumer)
 *       SENDERS  client-to-group: senders per group, one message in flight each
 *   storm NAME ID SECONDS PUBS WINDOW AT
 *       a broadcast phase (target all) during which, AT seconds in, every client is reset
 *       at once (a network blip, a deploy) and reconnects: reports the time until all are
 *       back and the broadcast's latency meanwhile; each client is checked for what was
 *       published from the moment it was back
 *   quit
 *
 * Build: gcc -O2 -o loadgen loadgen.c  (bench/run.py does it with the machine's gcc).
 * Only 127.0.0.1 is ever connected to. Every phase ends by its deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MODE_WPS 0
#define MODE_SIO 1
#define MODE_MQTT 2

#define ST_NEW 0
#define ST_CONNECTING 1
#define ST_UPGRADING 2
#define ST_SIO_OPEN 3
#define ST_MQTT_CONNACK 4 /* CONNECT sent */
#define ST_MQTT_SUBACK 5  /* SUBSCRIBE sent */
#define ST_READY 6
#define ST_CLOSED 7
#define ST_FAILED 8

#define TAG_CLIENT 0ULL
#define TAG_PUB 1ULL
#define TAG_STDIN 2ULL

#define MAX_PUBS 64
#define RING 4096
#define MAX_GROUPS 4096
#define GBUF (1 << 20)
#define HIST_US_PER_BUCKET 10
#define HIST_BUCKETS 1000000 /* 10 us resolution up to 10 s */
#define MARKER_LEN 35        /* "@@" + 20 + "." + 6 + "." + 4 + "." */
#define PAYLOAD_LEN 100

typedef struct {
    int fd;
    uint8_t state, stalled, sender, in_phase;
    uint16_t group;
    uint32_t count;       /* deliveries in the current phase */
    uint32_t base;        /* broadcasts published before it joined the phase (storm) */
    uint32_t outstanding; /* client-to-group messages in flight */
    char *rbuf;
    uint32_t rlen, rcap;
    char *wbuf;
    uint32_t wlen, woff, wcap;
    char *mbuf; /* MQTT: bytes of a packet split across WebSocket frames */
    uint32_t mlen, mcap;
} client_t;

typedef struct {
    int fd;
    int open;
    char *rbuf;
    uint32_t rlen, rcap;
    char *wbuf;
    uint32_t wlen, woff, wcap;
    uint32_t outstanding;
    uint32_t ring[RING];
    uint32_t rhead, rtail;
    char *mbuf; /* MQTT over WebSocket: the frames' payloads, not yet whole packets */
    uint32_t mlen, mcap;
    uint16_t next_pid;
} pub_t;

typedef struct {
    char *data;
    size_t len;
    size_t marker; /* offset of "@@" */
} tmpl_t;

/* -- configuration ----------------------------------------------------------------------- */
static int port = 0;
static int pub_port = 0; /* publishers' port, when not the clients' (an app server's) */
static int mode = MODE_WPS;
static const char *subprotocol = NULL;
static int nclients = 0;
static int concurrency = 500;
static int ngroups = 1;
static int stall_index = -1;
static double connect_timeout = 60.0;
static double drain_timeout = 15.0;
static char **paths;
static int npaths;
static tmpl_t *tmpls;
static int ntmpls;
static int mqtt_tcp = 0;              /* --transport tcp: MQTT without WebSocket */
static const char *pub_path = NULL;   /* --pub-path: the MQTT publishers' WebSocket path */

/* -- state --------------------------------------------------------------------------------- */
static int ep;
static client_t *clients;
static pub_t pubs[MAX_PUBS];
static uint32_t *hist;
static uint32_t *hist_storm; /* latencies while the clients of a storm reconnect */
static char gbuf[GBUF];
static uint32_t mask_state = 0x9e3779b9u;

/* connect activity */
static int connecting = 0, next_to_connect = 0, inflight = 0, nready = 0, nfailed = 0;
static int nclosed = 0;
static uint64_t t_connect0, t_connect_last, t_connect_deadline;
static int first_fail_status = 0;
static int first_fail_errno = 0;

/* phase activity */
typedef struct {
    int active;
    char name[32];
    int id;
    int pubs, window, target_groups, stall, senders;
    uint64_t t0, t_issue_end, t_drain_end, t_last_recv;
    int issuing;
    uint64_t expected, received, stale, failed, ok_publishes, issued, c2g_sent;
    uint64_t rr;
    uint64_t sent_all;
    uint64_t *sent_group;     /* per group: REST publishes + client-to-group messages */
    uint32_t *members;        /* active members per group at phase start */
    uint64_t active_clients;
    int first_bad_status;
    struct rusage ru0;
    int stalled_closed;
    /* storm: 0 none, 1 before the reset, 2 clients reconnecting, 3 all back (or gave up) */
    int storm;
    uint64_t t_storm, t_storm_back;
    int storm_timed_out;
} phase_t;
static phase_t ph;
static uint64_t closed_in_phase = 0;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q && n) die("out of memory");
    return q;
}

/* -- epoll helpers ------------------------------------------------------------------------ */
static void ep_set(int fd, uint64_t tag, uint32_t idx, uint32_t events, int op) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = (tag << 32) | idx;
    if (epoll_ctl(ep, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl: %s", strerror(errno));
}

/* -- output buffers ------------------------------------------------------------------------ */
/* Write now; whatever the socket does not take waits in wbuf for EPOLLOUT. Returns -1 on error. */
static int buffered_write(int fd, char **wbuf, uint32_t *wlen, uint32_t *woff, uint32_t *wcap,
                          const char *data, size_t n, int *want_out) {
    if (*wlen == *woff) {
        *wlen = *woff = 0;
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            w = 0;
        }
        if ((size_t)w == n) return 0;
        data += w;
        n -= (size_t)w;
    }
    if (*wlen + n > *wcap) {
        *wcap = (uint32_t)((*wlen + n) * 2 + 256);
        *wbuf = xrealloc(*wbuf, *wcap);
    }
    memcpy(*wbuf + *wlen, data, n);
    *wlen += (uint32_t)n;
    *want_out = 1;
    return 0;
}

static int flush_out(int fd, char *wbuf, uint32_t *wlen, uint32_t *woff) {
    while (*woff < *wlen) {
        ssize_t w = write(fd, wbuf + *woff, *wlen - *woff);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        *woff += (uint32_t)w;
    }
    *wlen = *woff = 0;
    return 0;
}

/* -- clients ------------------------------------------------------------------------------ */
static void client_events(int i) {
    client_t *c = &clients[i];
    uint32_t ev = c->stalled ? EPOLLRDHUP : EPOLLIN;
    if (c->wlen > c->woff) ev |= EPOLLOUT;
    ep_set(c->fd, TAG_CLIENT, (uint32_t)i, ev, EPOLL_CTL_MOD);
}

static void client_gone(int i, int failed) {
    client_t *c = &clients[i];
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_READY) {
        nclosed++;
        if (ph.active && c->in_phase) {
            /* No longer expected to receive: take what it still lacked out of the count. */
            uint64_t want = ph.sent_all + ph.sent_group[c->group];
            if (want > c->count) ph.expected -= want - c->count;
            ph.active_clients--;
            ph.members[c->group]--;
            c->in_phase = 0;
            closed_in_phase++;
        }
    }
    if (c->state < ST_READY && connecting) {
        inflight--;
        nfailed++;
    }
    c->state = failed ? ST_FAILED : ST_CLOSED;
}

static void client_write(int i, const char *data, size_t n) {
    client_t *c = &clients[i];
    int want = 0;
    if (c->fd < 0) return;
    if (buffered_write(c->fd, &c->wbuf, &c->wlen, &c->woff, &c->wcap, data, n, &want) < 0) {
        client_gone(i, 0);
        return;
    }
    if (want) client_events(i);
}

/* A masked, final WebSocket frame of `opcode` holding data (at most 65535 bytes) written
   to out; returns its length. */
static size_t ws_frame(char *out, int opcode, const char *data, size_t n) {
    size_t hl;
    out[0] = (char)(0x80 | opcode);
    if (n < 126) {
        out[1] = (char)(0x80 | n);
        hl = 2;
    } else {
        out[1] = (char)(0x80 | 126);
        out[2] = (char)(n >> 8);
        out[3] = (char)(n & 0xff);
        hl = 4;
    }
    mask_state ^= mask_state << 13;
    mask_state ^= mask_state >> 17;
    mask_state ^= mask_state << 5;
    uint8_t key[4];
    memcpy(key, &mask_state, 4);
    memcpy(out + hl, key, 4);
    hl += 4;
    for (size_t k = 0; k < n; k++) out[hl + k] = (char)(data[k] ^ key[k & 3]);
    return hl + n;
}

static void send_frame(int i, int opcode, const char *payload, size_t n) {
    char buf[14 + 4096];
    if (n > 4096) return;
    client_write(i, buf, ws_frame(buf, opcode, payload, n));
}

static void on_ready(int i) {
    client_t *c = &clients[i];
    c->state = ST_READY;
    nready++;
    inflight--;
    t_connect_last = now_ns();
    if (ph.active && ph.storm == 2) {
        /* Back from the storm: owed every broadcast published from now on. */
        c->in_phase = 1;
        c->count = 0;
        c->base = (uint32_t)ph.sent_all;
        ph.active_clients++;
        ph.members[c->group]++;
    }
}

static void start_connect(int i) {
    client_t *c = &clients[i];
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    inflight++;
    if (fd < 0) {
        if (!first_fail_errno) first_fail_errno = errno;
        c->state = ST_CONNECTING;
        client_gone(i, 1);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (i == stall_index) {
        /* The slow consumer: a small receive buffer, so what it does not read piles up in
         * the server rather than in this kernel. */
        int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
    c->fd = fd;
    c->state = ST_CONNECTING;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        if (!first_fail_errno) first_fail_errno = errno;
        client_gone(i, 1);
        return;
    }
    ep_set(fd, TAG_CLIENT, (uint32_t)i, EPOLLOUT, EPOLL_CTL_ADD);
}

static void send_upgrade(int i) {
    char req[8192];
    const char *path = paths[i % npaths];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     path, port, subprotocol ? "Sec-WebSocket-Protocol: " : "",
                     subprotocol ? subprotocol : "", subprotocol ? "\r\n" : "");
    if (n <= 0 || n >= (int)sizeof req) die("handshake request too long");
    clients[i].state = ST_UPGRADING;
    ep_set(clients[i].fd, TAG_CLIENT, (uint32_t)i, EPOLLIN, EPOLL_CTL_MOD);
    client_write(i, req, (size_t)n);
}

static uint64_t parse_digits(const char *p, int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; k++) v = v * 10 + (uint64_t)(p[k] - '0');
    return v;
}

static void make_payload(char *out, uint64_t t, int sender, int phase_id) {
    /* 100 bytes: the marker, then padding (no character that JSON would escape). */
    char head[MARKER_LEN + 1];
    snprintf(head, sizeof head, "@@%020llu.%06d.%04d.", (unsigned long long)t, sender, phase_id);
    memcpy(out, head, MARKER_LEN);
    memset(out + MARKER_LEN, 'x', PAYLOAD_LEN - MARKER_LEN);
}

static void c2g_send(int i, uint64_t t) {
    client_t *c = &clients[i];
    char payload[PAYLOAD_LEN];
    char msg[512];
    int n;
    make_payload(payload, t, i, ph.id);
    if (mode == MODE_SIO)
        n = snprintf(msg, sizeof msg, "42[\"s\",\"%.*s\"]", PAYLOAD_LEN, payload);
    else
        n = snprintf(msg, sizeof msg,
                     "{\"type\":\"sendToGroup\",\"group\":\"g%d\",\"dataType\":\"text\","
                     "\"data\":\"%.*s\"}",
                     c->group, PAYLOAD_LEN, payload);
    c->outstanding++;
    ph.c2g_sent++;
    ph.issued++;
    ph.sent_group[c->group]++;
    ph.expected += ph.members[c->group];
    send_frame(i, 1, msg, (size_t)n);
}

static void on_message(int i, const char *p, size_t n, uint64_t now) {
    client_t *c = &clients[i];
    const char *m = memmem(p, n, "@@", 2);
    if (!m || (size_t)(p + n - m) < MARKER_LEN) return; /* not ours (e.g. "connected") */
    uint64_t t = parse_digits(m + 2, 20);
    int sender = (int)parse_digits(m + 23, 6);
    int pid = (int)parse_digits(m + 30, 4);
    if (!ph.active || pid != ph.id || !c->in_phase) {
        ph.stale++;
        return;
    }
    c->count++;
    ph.received++;
    ph.t_last_recv = now;
    uint64_t us = now > t ? (now - t) / 1000 : 0;
    uint64_t b = us / HIST_US_PER_BUCKET;
    hist[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]++;
    if (ph.storm == 2) hist_storm[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]++;
    if (sender == i && c->sender && c->outstanding > 0) {
        c->outstanding--;
        if (ph.issuing && now < ph.t_issue_end) c2g_send(i, now_ns());
    }
}


/* -- MQTT subscribers (--mode mqtt) --------------------------------------------------------- */
static size_t mqtt_varint(char *out, size_t v) {
    size_t k = 0;
    do {
        uint8_t d = (uint8_t)(v & 0x7f);
        v >>= 7;
        out[k++] = (char)(v ? d | 0x80 : d);
    } while (v);
    return k;
}

/* CONNECT, MQTT 3.1.1 (level 4): clean session, keep alive 180 s (the most webpubsub allows). */
static size_t mqtt_connect_packet(char *out, const char *client_id) {
    size_t idl = strlen(client_id), k = 0;
    out[k++] = 0x10;
    k += mqtt_varint(out + k, 10 + 2 + idl);
    memcpy(out + k, "\x00\x04MQTT\x04\x02\x00\xb4", 10);
    k += 10;
    out[k++] = (char)(idl >> 8);
    out[k++] = (char)(idl & 0xff);
    memcpy(out + k, client_id, idl);
    return k + idl;
}

static void mqtt_client_send(int i, const char *data, size_t n) {
    if (mqtt_tcp)
        client_write(i, data, n);
    else
        send_frame(i, 2, data, n);
}

static void mqtt_send_connect(int i) {
    char id[16], pkt[64];
    snprintf(id, sizeof id, "s%d", i);
    size_t n = mqtt_connect_packet(pkt, id);
    clients[i].state = ST_MQTT_CONNACK;
    mqtt_client_send(i, pkt, n);
}

/* One SUBSCRIBE, packet id 1: "all" (the broadcasts) and "g<group>", both at QoS 0. */
static void mqtt_send_subscribe(int i) {
    char g[16], pkt[64];
    int gl = snprintf(g, sizeof g, "g%d", clients[i].group);
    size_t k = 0;
    pkt[k++] = (char)0x82;
    k += mqtt_varint(pkt + k, 2 + (2 + 3 + 1) + (2 + (size_t)gl + 1));
    pkt[k++] = 0;
    pkt[k++] = 1;
    memcpy(pkt + k, "\x00\x03" "all\x00", 6);
    k += 6;
    pkt[k++] = 0;
    pkt[k++] = (char)gl;
    memcpy(pkt + k, g, (size_t)gl);
    k += (size_t)gl;
    pkt[k++] = 0;
    clients[i].state = ST_MQTT_SUBACK;
    mqtt_client_send(i, pkt, k);
}

/* Whole MQTT packets in buf[0..len): fn(idx, first byte, body, body length, now) for each,
 * until fn returns nonzero (the connection is gone). Returns the bytes used. */
typedef int (*packet_fn)(int, uint8_t, const uint8_t *, size_t, uint64_t);

static size_t mqtt_packets(const char *buf, size_t len, packet_fn fn, int idx, uint64_t now) {
    const uint8_t *b = (const uint8_t *)buf;
    size_t off = 0;
    while (len - off >= 2) {
        size_t rem = 0, k = 1;
        int whole = 0;
        while (off + k < len && k <= 4) {
            uint8_t d = b[off + k];
            rem |= (size_t)(d & 0x7f) << (7 * (k - 1));
            k++;
            if (!(d & 0x80)) {
                whole = 1;
                break;
            }
        }
        if (!whole) {
            if (k > 4) die("malformed MQTT remaining length from the server");
            break;
        }
        if (len - off < k + rem) break;
        if (fn(idx, b[off], b + off + k, rem, now)) return len;
        off += k + rem;
    }
    return off;
}

/* MQTT failures are reported as 1000 + the CONNACK or SUBACK code (HTTP statuses are < 600). */
static int client_packet(int i, uint8_t first, const uint8_t *body, size_t n, uint64_t now) {
    client_t *c = &clients[i];
    switch (first >> 4) {
    case 3: { /* PUBLISH */
        int qos = (first >> 1) & 3;
        if (n < 2) return 0;
        size_t off = 2 + (((size_t)body[0] << 8) | body[1]) + (qos ? 2 : 0);
        if (off > n) return 0;
        if (qos == 1) { /* not expected (QoS 0 subscriptions), but answered as the standard says */
            char ack[4] = {0x40, 2, (char)body[off - 2], (char)body[off - 1]};
            mqtt_client_send(i, ack, 4);
        }
        on_message(i, (const char *)body + off, n - off, now);
        return c->fd < 0;
    }
    case 2: /* CONNACK */
        if (c->state != ST_MQTT_CONNACK) return 0;
        if (n >= 2 && body[1] == 0) {
            mqtt_send_subscribe(i);
            return c->fd < 0;
        }
        if (!first_fail_status) first_fail_status = 1000 + (n >= 2 ? body[1] : 0);
        client_gone(i, 1);
        return 1;
    case 9: /* SUBACK: one code per filter, 0x80 a refusal */
        if (c->state != ST_MQTT_SUBACK) return 0;
        if (n == 4 && body[2] < 0x80 && body[3] < 0x80) {
            on_ready(i);
            return 0;
        }
        if (!first_fail_status) first_fail_status = 1000 + (n >= 3 ? body[2] : 0);
        client_gone(i, 1);
        return 1;
    case 14: /* DISCONNECT */
        client_gone(i, c->state < ST_READY);
        return 1;
    }
    return 0;
}

/* The payload of a WebSocket binary frame: MQTT packets may straddle frames. */
static void client_mqtt_bytes(int i, const char *p, size_t n, uint64_t now) {
    client_t *c = &clients[i];
    if (c->mlen == 0) {
        size_t used = mqtt_packets(p, n, client_packet, i, now);
        if (c->fd < 0 || used == n) return;
        p += used;
        n -= used;
    }
    if (c->mlen + n > c->mcap) {
        c->mcap = (uint32_t)(c->mlen + n + 256);
        c->mbuf = xrealloc(c->mbuf, c->mcap);
    }
    memcpy(c->mbuf + c->mlen, p, n);
    c->mlen += (uint32_t)n;
    if (c->mlen == n) return; /* only the tail of this frame: it waits for the next */
    size_t used = mqtt_packets(c->mbuf, c->mlen, client_packet, i, now);
    if (c->fd < 0) return;
    memmove(c->mbuf, c->mbuf + used, c->mlen - used);
    c->mlen -= (uint32_t)used;
}

static void on_frame(int i, int opcode, const char *p, size_t n, uint64_t now) {
    client_t *c = &clients[i];
    if (opcode == 8) { /* close */
        client_gone(i, 0);
        return;
    }
    if (opcode == 9) { /* ping -> pong (RFC 6455 5.5.3) */
        send_frame(i, 10, p, n < 125 ? n : 125);
        return;
    }
    if (opcode != 1 && opcode != 2) return;
    if (mode == MODE_SIO) {
        if (n == 1 && p[0] == '2') { /* engine.io ping */
            send_frame(i, 1, "3", 1);
            return;
        }
        if (n >= 1 && p[0] == '0' && c->state == ST_SIO_OPEN) { /* engine.io open */
            send_frame(i, 1, "40", 2);                            /* socket.io connect "/" */
            return;
        }
        if (n >= 2 && p[0] == '4' && p[1] == '0') {
            if (c->state == ST_SIO_OPEN) on_ready(i);
            return;
        }
        if (n >= 2 && p[0] == '4' && p[1] == '2') on_message(i, p, n, now);
        return;
    }
    if (mode == MODE_MQTT) {
        if (opcode == 2) client_mqtt_bytes(i, p, n, now); /* text frames: not MQTT */
        return;
    }
    on_message(i, p, n, now);
}

/* The header of the WebSocket frame at b (avail bytes there): its length, with the payload
   length in *plen; 0 while the header is incomplete. The mask bit is not counted. */
static size_t ws_header(const uint8_t *b, size_t avail, uint64_t *plen) {
    if (avail < 2) return 0;
    *plen = b[1] & 0x7f;
    if (*plen == 126) {
        if (avail < 4) return 0;
        *plen = ((uint64_t)b[2] << 8) | b[3];
        return 4;
    }
    if (*plen == 127) {
        if (avail < 10) return 0;
        *plen = 0;
        for (int k = 0; k < 8; k++) *plen = (*plen << 8) | b[2 + k];
        return 10;
    }
    return 2;
}

static size_t parse_frames(int i, const char *buf, size_t len, uint64_t now) {
    size_t off = 0;
    while (len - off >= 2) {
        const uint8_t *b = (const uint8_t *)buf + off;
        uint64_t plen;
        size_t hl = ws_header(b, len - off, &plen);
        if (!hl) break;
        if (b[1] & 0x80) hl += 4; /* a masked server frame would be a server bug; skip it */
        if (len - off < hl + plen) break;
        on_frame(i, b[0] & 0x0f, buf + off + hl, (size_t)plen, now);
        off += hl + (size_t)plen;
        if (clients[i].fd < 0) return len;
    }
    return off;
}

static size_t handle_upgrade_response(int i, const char *buf, size_t len, uint64_t now) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return 0;
    if (len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
        if (!first_fail_status && len >= 12) first_fail_status = atoi(buf + 9);
        client_gone(i, 1);
        return len;
    }
    size_t hdr = (size_t)(end - buf) + 4;
    if (mode == MODE_SIO)
        clients[i].state = ST_SIO_OPEN;
    else if (mode == MODE_MQTT)
        mqtt_send_connect(i);
    else
        on_ready(i);
    return hdr + parse_frames(i, buf + hdr, len - hdr, now);
}

static size_t consume(int i, const char *buf, size_t len, uint64_t now) {
    if (clients[i].state == ST_UPGRADING) return handle_upgrade_response(i, buf, len, now);
    if (mode == MODE_MQTT && mqtt_tcp) return mqtt_packets(buf, len, client_packet, i, now);
    return parse_frames(i, buf, len, now);
}

static void client_readable(int i) {
    client_t *c = &clients[i];
    uint64_t now;
    if (c->rlen == 0) {
        ssize_t r = read(c->fd, gbuf, GBUF);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            client_gone(i, c->state < ST_READY);
            return;
        }
        now = now_ns();
        size_t used = consume(i, gbuf, (size_t)r, now);
        if (c->fd >= 0 && used < (size_t)r) {
            size_t left = (size_t)r - used;
            if (left > c->rcap) {
                c->rcap = (uint32_t)(left + 65536);
                c->rbuf = xrealloc(c->rbuf, c->rcap);
            }
            memcpy(c->rbuf, gbuf + used, left);
            c->rlen = (uint32_t)left;
        }
        return;
    }
    if (c->rcap - c->rlen < 65536) {
        c->rcap = c->rlen + 131072;
        c->rbuf = xrealloc(c->rbuf, c->rcap);
    }
    ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        client_gone(i, c->state < ST_READY);
        return;
    }
    now = now_ns();
    c->rlen += (uint32_t)r;
    size_t used = consume(i, c->rbuf, c->rlen, now);
    if (c->fd < 0) return;
    memmove(c->rbuf, c->rbuf + used, c->rlen - used);
    c->rlen -= (uint32_t)used;
    if (c->rlen == 0 && c->rcap > 262144) { /* give big buffers back */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
}

static void client_event(int i, uint32_t events) {
    client_t *c = &clients[i];
    if (c->fd < 0) return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            if (!first_fail_errno) first_fail_errno = err ? err : ECONNRESET;
            client_gone(i, 1);
            return;
        }
        if (mode == MODE_MQTT && mqtt_tcp) {
            ep_set(c->fd, TAG_CLIENT, (uint32_t)i, EPOLLIN, EPOLL_CTL_MOD);
            mqtt_send_connect(i);
        } else {
            send_upgrade(i);
        }
        return;
    }
    if (c->stalled) {
        if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
            ph.stalled_closed = 1;
            client_gone(i, 0);
        }
        return;
    }
    if (events & EPOLLOUT) {
        int r = flush_out(c->fd, c->wbuf, &c->wlen, &c->woff);
        if (r < 0) {
            client_gone(i, c->state < ST_READY);
            return;
        }
        if (r == 0) client_events(i);
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) client_readable(i);
}

/* -- publishers (HTTP/1.1 keep-alive, pipelined) ------------------------------------------ */
/* MQTT publishers (--mode mqtt) take these paths; their code follows the HTTP one. */
static int mqtt_pub_handshake(int fd, int k);
static void mqtt_issue_window(int k);
static void mqtt_pub_readable(int k);

static int pub_open(int k) {
    struct sockaddr_in sa;
    pub_t *p = &pubs[k];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)(pub_port ? pub_port : port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        (mode == MODE_MQTT && mqtt_pub_handshake(fd, k) < 0)) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    p->fd = fd;
    p->open = 1;
    p->rlen = p->wlen = p->woff = 0;
    p->outstanding = 0;
    p->rhead = p->rtail = 0;
    p->mlen = 0;
    ep_set(fd, TAG_PUB, (uint32_t)k, EPOLLIN, EPOLL_CTL_ADD);
    return 0;
}

static void pub_close(int k) {
    pub_t *p = &pubs[k];
    if (!p->open) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    p->open = 0;
    /* Requests that will never be answered: take them out of the expectation. */
    while (p->rtail != p->rhead) {
        uint32_t target = p->ring[p->rtail++ % RING];
        ph.failed++;
        if (target == 0) {
            ph.sent_all--;
            ph.expected -= ph.active_clients;
        } else {
            ph.sent_group[target - 1]--;
            ph.expected -= ph.members[target - 1];
        }
    }
    p->outstanding = 0;
}

/* Send a whole window of pipelined requests in one write(), so that they reach the server
 * together: a burst. The next window leaves when every request of this one is answered. */
/* A publish request (to all, or to group `target`) went into this window. */
static void pub_issued(pub_t *p, uint32_t target) {
    p->ring[p->rhead++ % RING] = target;
    p->outstanding++;
    ph.issued++;
    if (target == 0) {
        ph.sent_all++;
        ph.expected += ph.active_clients;
    } else {
        ph.sent_group[target - 1]++;
        ph.expected += ph.members[target - 1];
    }
}

/* Write a window of requests to publisher k (what the kernel does not take waits). */
static void pub_write(int k, const char *out, size_t len) {
    pub_t *p = &pubs[k];
    int want = 0;
    if (buffered_write(p->fd, &p->wbuf, &p->wlen, &p->woff, &p->wcap, out, len, &want) < 0) {
        pub_close(k);
        return;
    }
    if (want) ep_set(p->fd, TAG_PUB, (uint32_t)k, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
}

static void pub_issue_window(int k) {
    pub_t *p = &pubs[k];
    if (mode == MODE_MQTT) {
        mqtt_issue_window(k);
        return;
    }
    char *out = gbuf; /* not in use while we are here */
    size_t len = 0;
    for (int w = 0; w < ph.window; w++) {
        uint32_t target = ph.target_groups ? 1 + (uint32_t)(ph.rr++ % (uint64_t)ngroups) : 0;
        if ((int)target >= ntmpls) die("no request template %u", target);
        tmpl_t *tp = &tmpls[target];
        if (len + tp->len > GBUF) break;
        memcpy(out + len, tp->data, tp->len);
        /* the template's body is exactly the PAYLOAD_LEN bytes make_payload writes */
        make_payload(out + len + tp->marker, now_ns(), 999999, ph.id);
        len += tp->len;
        pub_issued(p, target);
    }
    pub_write(k, out, len);
}


/* -- MQTT publishers (--mode mqtt) ----------------------------------------------------------- */

static int write_all(int fd, const char *data, size_t n) {
    while (n) {
        ssize_t w = write(fd, data, n);
        if (w <= 0) return -1;
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

/* On the blocking socket, bounded by SO_RCVTIMEO: the upgrade (WebSocket), CONNECT, CONNACK. */
static int mqtt_pub_handshake(int fd, int k) {
    struct timeval tv = {10, 0};
    char buf[8192], pkt[64], id[16];
    size_t len = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (!mqtt_tcp) {
        int n = snprintf(buf, sizeof buf,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                         pub_path, port);
        if (n <= 0 || n >= (int)sizeof buf || write_all(fd, buf, (size_t)n) < 0) return -1;
        while (!memmem(buf, len, "\r\n\r\n", 4)) {
            ssize_t r = read(fd, buf + len, sizeof buf - len);
            if (r <= 0) return -1;
            len += (size_t)r;
            if (len == sizeof buf) return -1;
        }
        if (len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) return -1;
    }
    snprintf(id, sizeof id, "p%d", k);
    size_t n = mqtt_connect_packet(pkt, id);
    if (mqtt_tcp) {
        memcpy(buf, pkt, n);
    } else {
        n = ws_frame(buf, 0x2, pkt, n);
    }
    if (write_all(fd, buf, n) < 0) return -1;
    size_t want = mqtt_tcp ? 4 : 6; /* CONNACK, in one unmasked frame over WebSocket */
    for (len = 0; len < want;) {
        ssize_t r = read(fd, buf + len, want - len);
        if (r <= 0) return -1;
        len += (size_t)r;
    }
    const uint8_t *m = (const uint8_t *)buf + (mqtt_tcp ? 0 : 2);
    if (m[0] != 0x20 || m[3] != 0) return -1;
    return 0;
}

static void mqtt_issue_window(int k) {
    pub_t *p = &pubs[k];
    char *out = gbuf; /* not in use while we are here */
    size_t len = 0;
    for (int w = 0; w < ph.window; w++) {
        uint32_t target = ph.target_groups ? 1 + (uint32_t)(ph.rr++ % (uint64_t)ngroups) : 0;
        char topic[16], pkt[256];
        int tl = target ? snprintf(topic, sizeof topic, "g%u", target - 1)
                        : snprintf(topic, sizeof topic, "all");
        size_t q = 0;
        pkt[q++] = 0x32; /* PUBLISH, QoS 1 */
        q += mqtt_varint(pkt + q, 2 + (size_t)tl + 2 + PAYLOAD_LEN);
        pkt[q++] = 0;
        pkt[q++] = (char)tl;
        memcpy(pkt + q, topic, (size_t)tl);
        q += (size_t)tl;
        if (++p->next_pid == 0) p->next_pid = 1;
        pkt[q++] = (char)(p->next_pid >> 8);
        pkt[q++] = (char)(p->next_pid & 0xff);
        make_payload(pkt + q, now_ns(), 999999, ph.id);
        q += PAYLOAD_LEN;
        if (mqtt_tcp) {
            memcpy(out + len, pkt, q);
            len += q;
        } else {
            len += ws_frame(out + len, 0x2, pkt, q);
        }
        pub_issued(p, target);
    }
    pub_write(k, out, len);
}

static int mqtt_answered = 0;

static int pub_packet(int k, uint8_t first, const uint8_t *body, size_t n, uint64_t now) {
    pub_t *p = &pubs[k];
    (void)body;
    (void)n;
    (void)now;
    if ((first >> 4) != 4 || p->rtail == p->rhead) return 0; /* PUBACKs come in order */
    p->rtail++;
    p->outstanding--;
    ph.ok_publishes++;
    mqtt_answered++;
    return 0;
}

/* Server frames (unmasked) in buf: their payloads go to the publisher's MQTT stream. */
static size_t ws_payloads(pub_t *p, const char *buf, size_t len) {
    size_t off = 0;
    while (len - off >= 2) {
        const uint8_t *b = (const uint8_t *)buf + off;
        uint64_t plen;
        size_t hl = ws_header(b, len - off, &plen);
        if (!hl) break;
        if (len - off < hl + plen) break;
        int opcode = b[0] & 0x0f;
        if (opcode == 0 || opcode == 2) {
            if (p->mlen + plen > p->mcap) {
                p->mcap = (uint32_t)(p->mlen + plen + 4096);
                p->mbuf = xrealloc(p->mbuf, p->mcap);
            }
            memcpy(p->mbuf + p->mlen, b + hl, (size_t)plen);
            p->mlen += (uint32_t)plen;
        }
        off += hl + (size_t)plen;
    }
    return off;
}

static void mqtt_pub_readable(int k) {
    pub_t *p = &pubs[k];
    if (p->rcap - p->rlen < 65536) {
        p->rcap = p->rlen + 131072;
        p->rbuf = xrealloc(p->rbuf, p->rcap);
    }
    ssize_t r = read(p->fd, p->rbuf + p->rlen, p->rcap - p->rlen);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        pub_close(k);
        return;
    }
    p->rlen += (uint32_t)r;
    mqtt_answered = 0;
    size_t used;
    if (mqtt_tcp) {
        used = mqtt_packets(p->rbuf, p->rlen, pub_packet, k, 0);
    } else {
        used = ws_payloads(p, p->rbuf, p->rlen);
        size_t m = mqtt_packets(p->mbuf, p->mlen, pub_packet, k, 0);
        memmove(p->mbuf, p->mbuf + m, p->mlen - m);
        p->mlen -= (uint32_t)m;
    }
    memmove(p->rbuf, p->rbuf + used, p->rlen - used);
    p->rlen -= (uint32_t)used;
    if (mqtt_answered && ph.active && ph.issuing && p->outstanding == 0 && now_ns() < ph.t_issue_end)
        pub_issue_window(k);
}

static int find_content_length(const char *h, size_t n) {
    for (size_t k = 0; k + 15 < n; k++) {
        if ((h[k] == '\n') && strncasecmp(h + k + 1, "content-length:", 15) == 0)
            return atoi(h + k + 16);
    }
    return 0;
}

static void pub_readable(int k) {
    pub_t *p = &pubs[k];
    if (mode == MODE_MQTT) {
        mqtt_pub_readable(k);
        return;
    }
    if (p->rcap - p->rlen < 65536) {
        p->rcap = p->rlen + 131072;
        p->rbuf = xrealloc(p->rbuf, p->rcap);
    }
    ssize_t r = read(p->fd, p->rbuf + p->rlen, p->rcap - p->rlen);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        pub_close(k);
        return;
    }
    p->rlen += (uint32_t)r;
    size_t off = 0;
    int answered = 0;
    for (;;) {
        const char *b = p->rbuf + off;
        size_t avail = p->rlen - off;
        const char *end = memmem(b, avail, "\r\n\r\n", 4);
        if (!end) break;
        size_t hl = (size_t)(end - b) + 4;
        size_t total = hl + (size_t)find_content_length(b, hl);
        if (avail < total) break;
        int status = avail >= 12 ? atoi(b + 9) : 0;
        off += total;
        if (p->rtail == p->rhead) continue; /* unsolicited */
        uint32_t target = p->ring[p->rtail++ % RING];
        p->outstanding--;
        answered++;
        if (status >= 200 && status < 300) {
            ph.ok_publishes++;
        } else {
            if (!ph.first_bad_status) ph.first_bad_status = status;
            ph.failed++;
            if (target == 0) {
                ph.sent_all--;
                ph.expected -= ph.active_clients;
            } else {
                ph.sent_group[target - 1]--;
                ph.expected -= ph.members[target - 1];
            }
        }
    }
    memmove(p->rbuf, p->rbuf + off, p->rlen - off);
    p->rlen -= (uint32_t)off;
    if (answered && ph.active && ph.issuing && p->open && p->outstanding == 0 &&
        now_ns() < ph.t_issue_end)
        pub_issue_window(k);
}

static void pub_event(int k, uint32_t events) {
    pub_t *p = &pubs[k];
    if (!p->open) return;
    if (events & EPOLLOUT) {
        int r = flush_out(p->fd, p->wbuf, &p->wlen, &p->woff);
        if (r < 0) {
            pub_close(k);
            return;
        }
        if (r == 0) ep_set(p->fd, TAG_PUB, (uint32_t)k, EPOLLIN, EPOLL_CTL_MOD);
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) pub_readable(k);
}

/* -- results ------------------------------------------------------------------------------ */
static double pct_of(const uint32_t *h, uint64_t total, double q) {
    if (total == 0) return -1;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total) want = total - 1;
    uint64_t acc = 0;
    for (uint64_t b = 0; b < HIST_BUCKETS; b++) {
        acc += h[b];
        if (acc > want) return (double)(b * HIST_US_PER_BUCKET + HIST_US_PER_BUCKET / 2) / 1000.0;
    }
    return -1;
}

static double pct(uint64_t total, double q) { return pct_of(hist, total, q); }

static double max_latency(void) {
    for (int64_t b = HIST_BUCKETS - 1; b >= 0; b--)
        if (hist[b]) return (double)((uint64_t)b * HIST_US_PER_BUCKET + HIST_US_PER_BUCKET) / 1000.0;
    return -1;
}

static double cpu_seconds(const struct rusage *a, const struct rusage *b) {
    return (double)(b->ru_utime.tv_sec - a->ru_utime.tv_sec) +
           (double)(b->ru_utime.tv_usec - a->ru_utime.tv_usec) / 1e6 +
           (double)(b->ru_stime.tv_sec - a->ru_stime.tv_sec) +
           (double)(b->ru_stime.tv_usec - a->ru_stime.tv_usec) / 1e6;
}

static void finish_connect(int timed_out) {
    if (ph.active && ph.storm == 2) {
        /* The storm's clients are back (or some gave up): the phase reports it. */
        ph.t_storm_back = t_connect_last > ph.t_storm ? t_connect_last : now_ns();
        ph.storm_timed_out = timed_out;
        ph.storm = 3;
        connecting = 0;
        return;
    }
    double secs = (double)((t_connect_last > t_connect0 ? t_connect_last : now_ns()) - t_connect0) / 1e9;
    printf("{\"event\":\"connected\",\"clients\":%d,\"ready\":%d,\"failed\":%d,\"timed_out\":%s,"
           "\"seconds\":%.4f,\"handshakes_per_s\":%.1f,\"first_fail_status\":%d,"
           "\"first_fail_errno\":%d}\n",
           nclients, nready, nfailed + (timed_out ? nclients - nready - nfailed : 0),
           timed_out ? "true" : "false", secs, secs > 0 ? nready / secs : 0.0, first_fail_status,
           first_fail_errno);
    fflush(stdout);
    connecting = 0;
}

static void finish_phase(int timed_out) {
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    uint64_t end = ph.t_last_recv > ph.t0 ? ph.t_last_recv : now_ns();
    double secs = (double)(end - ph.t0) / 1e9;
    double wall = (double)(now_ns() - ph.t0) / 1e9;
    /* Per-client check: every active client got every message addressed to it. */
    uint64_t missing = 0, extra = 0, complete = 0, checked = 0;
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (!c->in_phase) continue;
        uint64_t want = ph.sent_all + ph.sent_group[c->group] - c->base;
        checked++;
        if (c->count < want) missing += want - c->count;
        else extra += c->count - want;
        if (c->count == want) complete++;
    }
    uint64_t lat_n = 0;
    for (uint64_t b = 0; b < HIST_BUCKETS; b++) lat_n += hist[b];
    printf("{\"event\":\"phase\",\"name\":\"%s\",\"id\":%d,\"seconds\":%.4f,\"wall_seconds\":%.4f,"
           "\"timed_out\":%s,\"publishes\":%llu,\"failed_publishes\":%llu,\"first_bad_status\":%d,"
           "\"client_messages\":%llu,\"deliveries\":%llu,\"expected\":%llu,\"missing\":%llu,"
           "\"extra\":%llu,\"stale\":%llu,\"clients_checked\":%llu,\"clients_complete\":%llu,"
           "\"clients_closed\":%llu,\"deliveries_per_s\":%.1f,\"messages_per_s\":%.1f,"
           "\"latency_ms\":{\"samples\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
           "\"max\":%.3f},\"generator_cpu_s\":%.4f",
           ph.name, ph.id, secs, wall, timed_out ? "true" : "false",
           (unsigned long long)ph.ok_publishes, (unsigned long long)ph.failed, ph.first_bad_status,
           (unsigned long long)ph.c2g_sent, (unsigned long long)ph.received,
           (unsigned long long)ph.expected, (unsigned long long)missing,
           (unsigned long long)extra, (unsigned long long)ph.stale, (unsigned long long)checked,
           (unsigned long long)complete, (unsigned long long)closed_in_phase,
           secs > 0 ? (double)ph.received / secs : 0.0,
           secs > 0 ? (double)(ph.ok_publishes + ph.c2g_sent) / secs : 0.0,
           (unsigned long long)lat_n, pct(lat_n, 0.50), pct(lat_n, 0.90), pct(lat_n, 0.99),
           pct(lat_n, 0.999), max_latency(), cpu_seconds(&ph.ru0, &ru1));
    if (ph.stall && stall_index >= 0 && stall_index < nclients) {
        client_t *s = &clients[stall_index];
        struct sockaddr_in local;
        socklen_t ll = sizeof local;
        int lport = 0;
        if (s->fd >= 0 && getsockname(s->fd, (struct sockaddr *)&local, &ll) == 0)
            lport = ntohs(local.sin_port);
        printf(",\"stalled\":{\"index\":%d,\"local_port\":%d,\"received\":%u,"
               "\"addressed\":%llu,\"closed_by_server\":%s}",
               stall_index, lport, s->count,
               (unsigned long long)(ph.sent_all + ph.sent_group[s->group]),
               (ph.stalled_closed || s->fd < 0) ? "true" : "false");
    }
    if (ph.storm) {
        uint64_t storm_n = 0;
        for (uint64_t b = 0; b < HIST_BUCKETS; b++) storm_n += hist_storm[b];
        int back = ph.storm == 3;
        double storm_secs =
            ph.t_storm && back ? (double)(ph.t_storm_back - ph.t_storm) / 1e9 : -1.0;
        printf(",\"storm\":{\"at_s\":%.3f,\"seconds\":%.4f,\"back\":%d,\"failed\":%d,"
               "\"timed_out\":%s,\"latency_ms\":{\"samples\":%llu,\"p50\":%.3f,\"p99\":%.3f,"
               "\"max\":%.3f}}",
               ph.t_storm ? (double)(ph.t_storm - ph.t0) / 1e9 : -1.0, storm_secs, nready,
               nclients - nready, (!back || ph.storm_timed_out) ? "true" : "false",
               (unsigned long long)storm_n, pct_of(hist_storm, storm_n, 0.50),
               pct_of(hist_storm, storm_n, 0.99), pct_of(hist_storm, storm_n, 1.0));
        connecting = 0;
    }
    printf("}\n");
    fflush(stdout);
    /* The slow consumer stays stalled until the next command, so that the runner can look
     * at the socket queues; then it reads again (what it missed arrives as stale). */
    for (int i = 0; i < nclients; i++) {
        clients[i].in_phase = 0;
        clients[i].sender = 0;
    }
    ph.active = 0;
}

static void start_phase(char *args) {
    char name[32], target[16];
    double seconds;
    int id, npub, window, stall, senders;
    if (sscanf(args, "%31s %d %lf %d %d %15s %d %d", name, &id, &seconds, &npub, &window, target,
               &stall, &senders) != 8)
        die("bad run command: %s", args);
    if (npub > MAX_PUBS || window < 1 || window > RING / 2 || id < 1 || id > 9999 || seconds <= 0 ||
        seconds > 120)
        die("run: argument out of range");
    memset(hist, 0, sizeof(uint32_t) * HIST_BUCKETS);
    free(ph.sent_group);
    free(ph.members);
    memset(&ph, 0, sizeof ph);
    closed_in_phase = 0;
    snprintf(ph.name, sizeof ph.name, "%s", name);
    ph.id = id;
    ph.pubs = npub;
    ph.window = window;
    ph.target_groups = strcmp(target, "groups") == 0;
    ph.stall = stall;
    ph.senders = senders;
    ph.sent_group = calloc((size_t)ngroups, sizeof(uint64_t));
    ph.members = calloc((size_t)ngroups, sizeof(uint32_t));
    getrusage(RUSAGE_SELF, &ph.ru0);
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        c->count = 0;
        c->base = 0;
        c->outstanding = 0;
        c->sender = 0;
        c->in_phase = 0;
        if (c->state != ST_READY || c->fd < 0) continue;
        if (stall && i == stall_index) {
            c->stalled = 1;
            client_events(i);
            continue;
        }
        c->in_phase = 1;
        ph.active_clients++;
        ph.members[c->group]++;
    }
    for (int k = 0; k < npub; k++)
        if (!pubs[k].open && pub_open(k) < 0) die("cannot open publisher connection");
    ph.active = 1;
    ph.issuing = 1;
    ph.t0 = now_ns();
    ph.t_issue_end = ph.t0 + (uint64_t)(seconds * 1e9);
    ph.t_drain_end = ph.t_issue_end + (uint64_t)(drain_timeout * 1e9);
    for (int k = 0; k < npub; k++)
        if (pubs[k].open) pub_issue_window(k);
    if (senders > 0) {
        /* The first `senders` members of each group: client i is in group i % ngroups. */
        int limit = senders * ngroups;
        for (int i = 0; i < nclients && i < limit; i++) {
            if (!clients[i].in_phase) continue;
            clients[i].sender = 1;
            c2g_send(i, now_ns());
        }
    }
}

static void storm_reset(uint64_t now) {
    /* Reset every client at once (no close handshake: what a blip or a deploy looks like to
     * the server), then reconnect them all through the usual connect path. */
    struct linger lg = {1, 0};
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (c->fd >= 0) {
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
        }
        c->state = ST_NEW;
        c->in_phase = 0;
        c->count = 0;
        c->rlen = 0;
        c->wlen = c->woff = 0;
    }
    ph.expected = ph.received; /* nothing more is owed to the old sockets */
    ph.active_clients = 0;
    memset(ph.members, 0, sizeof(uint32_t) * (size_t)ngroups);
    memset(hist_storm, 0, sizeof(uint32_t) * HIST_BUCKETS);
    ph.storm = 2;
    ph.t_storm = now;
    nready = nfailed = inflight = next_to_connect = 0;
    connecting = 1;
    t_connect0 = t_connect_last = now;
    t_connect_deadline = now + (uint64_t)(connect_timeout * 1e9);
    while (next_to_connect < nclients && inflight < concurrency) start_connect(next_to_connect++);
}

static void check_phase(uint64_t now) {
    if (!ph.active) return;
    if (ph.storm == 1 && now >= ph.t_storm) storm_reset(now);
    if (ph.issuing && now >= ph.t_issue_end) ph.issuing = 0;
    if (ph.issuing) return;
    if (ph.storm == 2 && now < ph.t_drain_end) return; /* the phase ends once all are back */
    int outstanding = 0;
    for (int k = 0; k < ph.pubs; k++) outstanding += pubs[k].open ? (int)pubs[k].outstanding : 0;
    if (outstanding == 0 && ph.received >= ph.expected) {
        finish_phase(0);
    } else if (now >= ph.t_drain_end) {
        finish_phase(1);
    }
}

/* -- commands ------------------------------------------------------------------------------ */
static char cmdbuf[4096];
static size_t cmdlen = 0;

static void quit_all(void) {
    /* Reset rather than close: no TIME_WAIT, so the next session finds free local ports. */
    struct linger lg = {1, 0};
    for (int i = 0; i < nclients; i++)
        if (clients[i].fd >= 0) {
            setsockopt(clients[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(clients[i].fd);
        }
    for (int k = 0; k < MAX_PUBS; k++)
        if (pubs[k].open) close(pubs[k].fd);
    printf("{\"event\":\"bye\"}\n");
    fflush(stdout);
    exit(0);
}

static void resume_stalled(void) {
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (c->stalled) {
            c->stalled = 0;
            if (c->fd >= 0) client_events(i);
        }
    }
}

static void command(char *line) {
    resume_stalled();
    if (strncmp(line, "connect", 7) == 0) {
        connecting = 1;
        t_connect0 = now_ns();
        t_connect_last = t_connect0;
        t_connect_deadline = t_connect0 + (uint64_t)(connect_timeout * 1e9);
        while (next_to_connect < nclients && inflight < concurrency) start_connect(next_to_connect++);
    } else if (strncmp(line, "run ", 4) == 0) {
        start_phase(line + 4);
    } else if (strncmp(line, "storm ", 6) == 0) {
        char name[32], args[128];
        int id, npub, window;
        double seconds, at;
        if (sscanf(line + 6, "%31s %d %lf %d %d %lf", name, &id, &seconds, &npub, &window, &at) !=
                6 ||
            at <= 0 || at >= seconds)
            die("bad storm command: %s", line);
        snprintf(args, sizeof args, "%s %d %f %d %d all 0 0", name, id, seconds, npub, window);
        start_phase(args);
        ph.storm = 1;
        ph.t_storm = ph.t0 + (uint64_t)(at * 1e9);
    } else if (strncmp(line, "quit", 4) == 0) {
        quit_all();
    } else {
        die("unknown command: %s", line);
    }
}

static int busy(void) { return connecting || ph.active; }

static int stdin_eof = 0;

static void stdin_readable(void) {
    ssize_t r = read(0, cmdbuf + cmdlen, sizeof cmdbuf - 1 - cmdlen);
    if (r <= 0) { /* the runner went away: finish what was asked, then quit */
        stdin_eof = 1;
        epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
        return;
    }
    cmdlen += (size_t)r;
}

static void next_command(void) {
    char *nl;
    if (busy()) return;
    if (!(nl = memchr(cmdbuf, '\n', cmdlen))) {
        if (stdin_eof) quit_all();
        return;
    }
    *nl = 0;
    char line[4096];
    snprintf(line, sizeof line, "%s", cmdbuf);
    size_t used = (size_t)(nl - cmdbuf) + 1;
    memmove(cmdbuf, cmdbuf + used, cmdlen - used);
    cmdlen -= used;
    command(line);
}

/* -- set-up ----------------------------------------------------------------------------------- */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read %s", path);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void load_paths(const char *file) {
    size_t len;
    char *buf = slurp(file, &len);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        paths = xrealloc(paths, sizeof(char *) * (size_t)(npaths + 1));
        paths[npaths++] = line;
    }
    if (npaths == 0) die("no paths in %s", file);
}

/* Templates: repeated "<length>\n<bytes>\n"; each body holds the marker placeholder "@@". */
static void load_templates(const char *file) {
    size_t len, off = 0;
    char *buf = slurp(file, &len);
    while (off < len) {
        char *end;
        size_t n = strtoul(buf + off, &end, 10);
        if (*end != '\n' || end + 1 + n > buf + len) die("bad template file");
        tmpls = xrealloc(tmpls, sizeof(tmpl_t) * (size_t)(ntmpls + 1));
        tmpl_t *t = &tmpls[ntmpls++];
        t->data = end + 1;
        t->len = n;
        char *m = memmem(t->data, n, "@@", 2);
        if (!m || (size_t)(t->data + n - m) < PAYLOAD_LEN) die("template without marker");
        t->marker = (size_t)(m - t->data);
        off = (size_t)(end + 1 - buf) + n + 1;
    }
}

int main(int argc, char **argv) {
    const char *paths_file = NULL, *tmpl_file = NULL;
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!v) die("missing value for %s", k);
        if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--pub-port")) pub_port = atoi(v);
        else if (!strcmp(k, "--mode"))
            mode = !strcmp(v, "sio") ? MODE_SIO : !strcmp(v, "mqtt") ? MODE_MQTT : MODE_WPS;
        else if (!strcmp(k, "--transport")) mqtt_tcp = !strcmp(v, "tcp");
        else if (!strcmp(k, "--pub-path")) pub_path = v;
        else if (!strcmp(k, "--subprotocol")) subprotocol = *v ? v : NULL;
        else if (!strcmp(k, "--clients")) nclients = atoi(v);
        else if (!strcmp(k, "--concurrency")) concurrency = atoi(v);
        else if (!strcmp(k, "--groups")) ngroups = atoi(v);
        else if (!strcmp(k, "--stall-index")) stall_index = atoi(v);
        else if (!strcmp(k, "--paths")) paths_file = v;
        else if (!strcmp(k, "--templates")) tmpl_file = v;
        else if (!strcmp(k, "--connect-timeout")) connect_timeout = atof(v);
        else if (!strcmp(k, "--drain")) drain_timeout = atof(v);
        else die("unknown option %s", k);
        a++;
    }
    if (port <= 0 || nclients <= 0 || !paths_file || (!tmpl_file && mode != MODE_MQTT) || ngroups < 1 ||
        ngroups > MAX_GROUPS || concurrency < 1)
        die("usage: loadgen --port P --clients N --paths FILE --templates FILE [--mode wps|sio] "
            "[--subprotocol S] [--groups G] [--concurrency C] [--stall-index I]\n"
            "       mqtt: --mode mqtt [--transport ws|tcp] [--pub-path PATH] (no --templates)");
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)nclients + 100 > rl.rlim_cur) die("ulimit -n %lu is too low", (unsigned long)rl.rlim_cur);
    load_paths(paths_file);
    if (tmpl_file) load_templates(tmpl_file);
    if (!pub_path) pub_path = "/mqtt";
    clients = calloc((size_t)nclients, sizeof(client_t));
    hist = calloc(HIST_BUCKETS, sizeof(uint32_t));
    hist_storm = calloc(HIST_BUCKETS, sizeof(uint32_t));
    if (!clients || !hist || !hist_storm) die("out of memory");
    for (int i = 0; i < nclients; i++) {
        clients[i].fd = -1;
        clients[i].group = (uint16_t)(i % ngroups);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    ep_set(0, TAG_STDIN, 0, EPOLLIN, EPOLL_CTL_ADD);
    printf("{\"event\":\"hello\",\"clients\":%d,\"groups\":%d,\"templates\":%d}\n", nclients,
           ngroups, ntmpls);
    fflush(stdout);

    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, busy() ? 2 : 50);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        /* Publishers first: the next publish leaves before this batch of receives is read,
         * so the generator never holds the server idle in the one-at-a-time scenario. */
        for (int e = 0; e < n; e++) {
            uint64_t tag = evs[e].data.u64 >> 32;
            uint32_t idx = (uint32_t)evs[e].data.u64;
            if (tag == TAG_PUB) pub_event((int)idx, evs[e].events);
            else if (tag == TAG_STDIN) stdin_readable();
        }
        for (int e = 0, seen = 0; e < n; e++) {
            if ((evs[e].data.u64 >> 32) != TAG_CLIENT) continue;
            client_event((int)(uint32_t)evs[e].data.u64, evs[e].events);
            /* A batch of 1024 receives takes milliseconds: look at the publishers between
             * slices of it, so that an answered publish is followed at once by the next. */
            if (++seen % 64 == 0 && ph.active)
                for (int k = 0; k < ph.pubs; k++)
                    if (pubs[k].open && pubs[k].outstanding) pub_readable(k);
        }
        uint64_t now = now_ns();
        if (connecting) {
            while (next_to_connect < nclients && inflight < concurrency)
                start_connect(next_to_connect++);
            if (nready + nfailed >= nclients) finish_connect(0);
            else if (now >= t_connect_deadline) finish_connect(1);
        }
        check_phase(now);
        next_command();
    }
}

/*
 * loadgen: single-threaded epoll SMTP load generator for `make bench`.
 *
 * Speaks real SMTP without pipelining: reads the greeting, EHLO, AUTH PLAIN
 * with an initial response, then MAIL/RCPT/DATA with a generated message of
 * the requested size (CRLF line ends, no line starts with '.'), then QUIT.
 * Every reply code is checked; an unexpected one stops the run (exit 1) and
 * is reported on stderr and in the JSON result line.
 *
 * Modes:
 *   send       --conns C --msgs M --size S : C concurrent connections, each
 *              authenticates once and sends M messages of S bytes (W1, W4).
 *   handshake  --conns C --total N [--duration D] : connect, EHLO, AUTH, QUIT
 *              with C connections in flight until N handshakes are done, or
 *              until D seconds have passed and those in flight finish (W2).
 *   idle       --conns C --hold SECS       : open C connections, EHLO each,
 *              print a {"event":"ready"} line once all are idle, hold them for
 *              SECS seconds (or until SIGUSR1), then QUIT all (W3).
 *
 * Safety: loopback (127.0.0.0/8) targets only; every run is bounded by
 * --timeout seconds of wall time.
 *
 * Output: one JSON line on stdout with counts, wall seconds and the load
 * generator's own CPU time (getrusage), so the runner can check it was not
 * the bottleneck.
 *
 * Build: gcc -O2 -Wall -Wextra -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { M_SEND, M_HANDSHAKE, M_IDLE };

enum state {
    S_FREE,
    S_CONNECTING,
    S_GREETING,
    S_EHLO,
    S_AUTH,
    S_MAIL,
    S_RCPT,
    S_DATA,
    S_BODY,
    S_IDLE,
    S_QUIT,
    S_WAITCLOSE,
};

static const char *state_name[] = {
    "free", "connecting", "greeting", "ehlo", "auth", "mail",
    "rcpt", "data", "body", "idle", "quit", "waitclose",
};

#define INBUF 8192
#define CMDBUF 1024

struct conn {
    int fd;
    int slot;
    enum state st;
    long msgs_done;
    size_t inlen;
    const char *out;
    size_t outlen;
    int want_out; /* EPOLLOUT registered */
    char in[INBUF];
    char cmd[CMDBUF];
};

/* configuration */
static enum mode g_mode = M_SEND;
static const char *g_host = "127.0.0.1";
static int g_port = 0;
static long g_conns = 1;
static long g_msgs = 1;
static long g_size = 10240;
static long g_total = 0;
static double g_hold = 3.0;
static double g_duration = 0; /* handshake mode: stop starting new ones after this */
static double g_timeout = 120.0;
static long g_ramp = 100; /* idle mode: connections being set up at once */
static const char *g_user = "bench";
static const char *g_pass = "bench";
static const char *g_from = NULL;
static const char *g_rcpt = "sink@bench.test";
static const char *g_ehlo = "loadgen.bench.test";

/* state */
static int g_ep = -1;
static struct conn *g_c = NULL;
static struct sockaddr_in g_addr;
static char *g_msg = NULL; /* message + terminating ".\r\n" */
static size_t g_msglen = 0;
static char g_auth[CMDBUF];
static char g_mailcmd[CMDBUF];
static char g_rcptcmd[CMDBUF];
static double g_t0, g_ready_t = -1;
static long g_launched = 0, g_finished = 0, g_active = 0, g_setting_up = 0;
static long g_messages = 0, g_handshakes = 0, g_idle = 0;
static unsigned long long g_bytes = 0, g_bytes_out = 0;
static long g_errors = 0;
static char g_first_error[512] = "";
static volatile sig_atomic_t g_release = 0;
static int g_releasing = 0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            fputc('\\', f);
            fputc(ch, f);
        } else if (ch < 0x20 || ch >= 0x7f) {
            fprintf(f, "\\u%04x", ch);
        } else {
            fputc(ch, f);
        }
    }
    fputc('"', f);
}

static void report_and_exit(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double ut = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double stt = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double wall = now() - g_t0;
    const char *mode = g_mode == M_SEND ? "send" : g_mode == M_HANDSHAKE ? "handshake" : "idle";
    printf("{\"event\":\"result\",\"ok\":%s,\"mode\":\"%s\",\"conns\":%ld,\"msgs_per_conn\":%ld,"
           "\"size\":%ld,\"total\":%ld,\"messages\":%ld,\"handshakes\":%ld,\"idle_conns\":%ld,"
           "\"bytes\":%llu,\"bytes_out\":%llu,\"wall_s\":%.6f,\"ready_s\":%.6f,"
           "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f,\"cpu_s\":%.6f,\"cpu_pct_of_wall\":%.2f,"
           "\"errors\":%ld,\"first_error\":",
           g_errors ? "false" : "true", mode, g_conns, g_msgs, g_size, g_total, g_messages,
           g_handshakes, g_idle, g_bytes, g_bytes_out, wall, g_ready_t, ut, stt, ut + stt,
           wall > 0 ? 100.0 * (ut + stt) / wall : 0.0, g_errors);
    json_str(stdout, g_first_error);
    printf("}\n");
    fflush(stdout);
    exit(g_errors ? 1 : 0);
}

/* An unexpected event: record it and stop the whole run (results are void). */
static void fail(struct conn *c, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_errors++;
    snprintf(g_first_error, sizeof g_first_error, "conn %d state %s: %s", c ? c->slot : -1,
             c ? state_name[c->st] : "-", msg);
    fprintf(stderr, "loadgen: ERROR %s\n", g_first_error);
    report_and_exit();
}

static void b64(const unsigned char *src, size_t n, char *dst) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0, o = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)src[i] << 16 | (unsigned)src[i + 1] << 8 | src[i + 2];
        dst[o++] = tbl[v >> 18 & 63];
        dst[o++] = tbl[v >> 12 & 63];
        dst[o++] = tbl[v >> 6 & 63];
        dst[o++] = tbl[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)src[i] << 16 | (i + 1 < n ? (unsigned)src[i + 1] << 8 : 0);
        dst[o++] = tbl[v >> 18 & 63];
        dst[o++] = tbl[v >> 12 & 63];
        dst[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        dst[o++] = '=';
    }
    dst[o] = 0;
}

/* Message of exactly g_size bytes (headers + body, CRLF line ends, no line
 * starting with '.'), followed by the "." terminator line. */
static void build_message(void) {
    char hdr[1024];
    int hl = snprintf(hdr, sizeof hdr,
                      "From: <%s>\r\nTo: <%s>\r\nSubject: smtpgate bench message\r\n"
                      "Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
                      "Message-ID: <bench.%ld@loadgen.bench.test>\r\n"
                      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                      g_from, g_rcpt, g_size);
    if (g_size < hl + 16) {
        fprintf(stderr, "loadgen: --size must be at least %d\n", hl + 16);
        exit(2);
    }
    g_msglen = (size_t)g_size + 3;
    g_msg = malloc(g_msglen + 1);
    if (!g_msg) {
        perror("malloc");
        exit(2);
    }
    memcpy(g_msg, hdr, (size_t)hl);
    size_t pos = (size_t)hl, end = (size_t)g_size;
    static const char pat[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-";
    long line = 0;
    while (pos < end) {
        size_t rem = end - pos;
        size_t len; /* content length, excluding CRLF */
        if (rem >= 80 + 82)
            len = 78;
        else if (rem > 80)
            len = (rem - 4) / 2; /* split the rest into two lines >= 1 char */
        else
            len = rem - 2;
        for (size_t k = 0; k < len; k++)
            g_msg[pos + k] = pat[(k + (size_t)line) % (sizeof pat - 1)];
        g_msg[pos] = (char)('A' + line % 26); /* never '.' */
        g_msg[pos + len] = '\r';
        g_msg[pos + len + 1] = '\n';
        pos += len + 2;
        line++;
    }
    memcpy(g_msg + end, ".\r\n", 3);
    g_msg[g_msglen] = 0;
}

static void set_events(struct conn *c, int want_out) {
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail(c, "epoll_ctl: %s", strerror(errno));
    c->want_out = want_out;
}

static void flush_out(struct conn *c) {
    while (c->outlen > 0) {
        ssize_t n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, 1);
                return;
            }
            fail(c, "send: %s", strerror(errno));
        }
        c->out += n;
        c->outlen -= (size_t)n;
        g_bytes_out += (unsigned long long)n;
    }
    set_events(c, 0);
}

static void send_cmd(struct conn *c, const char *cmd, enum state next) {
    size_t n = strlen(cmd);
    memcpy(c->cmd, cmd, n);
    c->out = c->cmd;
    c->outlen = n;
    c->st = next;
    flush_out(c);
}

static void start_conn(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(c, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->inlen = 0;
    c->msgs_done = 0;
    c->outlen = 0;
    c->want_out = 1;
    c->st = S_CONNECTING;
    g_launched++;
    g_active++;
    g_setting_up++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        fail(c, "epoll_ctl add: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 && errno != EINPROGRESS)
        fail(c, "connect: %s", strerror(errno));
}

static void maybe_launch(void);

static void close_conn(struct conn *c) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->st = S_FREE;
    g_active--;
    g_finished++;
}

static void all_idle_check(void) {
    if (g_mode == M_IDLE && g_idle == g_conns && g_ready_t < 0) {
        g_ready_t = now() - g_t0;
        printf("{\"event\":\"ready\",\"idle_conns\":%ld,\"ready_s\":%.6f}\n", g_idle, g_ready_t);
        fflush(stdout);
    }
}

static void on_reply(struct conn *c, int code, const char *line) {
    if (c->outlen > 0)
        fail(c, "reply before our command was fully sent: %s", line);
#define EXPECT(x)                                                                               \
    do {                                                                                        \
        if (code != (x))                                                                        \
            fail(c, "expected %d, got: %s", (x), line);                                         \
    } while (0)
    switch (c->st) {
    case S_GREETING:
        EXPECT(220);
        {
            char buf[300];
            snprintf(buf, sizeof buf, "EHLO %s\r\n", g_ehlo);
            send_cmd(c, buf, S_EHLO);
        }
        break;
    case S_EHLO:
        EXPECT(250);
        if (g_mode == M_IDLE) {
            c->st = S_IDLE;
            g_idle++;
            g_setting_up--;
            all_idle_check();
            maybe_launch();
        } else {
            send_cmd(c, g_auth, S_AUTH);
        }
        break;
    case S_AUTH:
        EXPECT(235);
        if (g_mode == M_HANDSHAKE)
            send_cmd(c, "QUIT\r\n", S_QUIT);
        else
            send_cmd(c, g_mailcmd, S_MAIL);
        break;
    case S_MAIL:
        EXPECT(250);
        send_cmd(c, g_rcptcmd, S_RCPT);
        break;
    case S_RCPT:
        EXPECT(250);
        send_cmd(c, "DATA\r\n", S_DATA);
        break;
    case S_DATA:
        EXPECT(354);
        c->st = S_BODY;
        c->out = g_msg;
        c->outlen = g_msglen;
        flush_out(c);
        break;
    case S_BODY:
        EXPECT(250);
        c->msgs_done++;
        g_messages++;
        g_bytes += (unsigned long long)g_size;
        if (c->msgs_done >= g_msgs)
            send_cmd(c, "QUIT\r\n", S_QUIT);
        else
            send_cmd(c, g_mailcmd, S_MAIL);
        break;
    case S_QUIT:
        EXPECT(221);
        if (g_mode == M_HANDSHAKE)
            g_handshakes++;
        /* Wait for the server to close first, so TIME_WAIT stays on its side
         * and the load generator does not run out of ephemeral ports. */
        c->st = S_WAITCLOSE;
        break;
    default:
        fail(c, "unexpected reply: %s", line);
    }
#undef EXPECT
}

static void on_readable(struct conn *c) {
    for (;;) {
        if (c->inlen >= INBUF)
            fail(c, "reply line too long");
        ssize_t n = recv(c->fd, c->in + c->inlen, INBUF - c->inlen, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (c->st == S_WAITCLOSE && errno == ECONNRESET) {
                close_conn(c);
                maybe_launch();
                return;
            }
            fail(c, "recv: %s", strerror(errno));
        }
        if (n == 0) {
            if (c->st == S_WAITCLOSE) {
                close_conn(c);
                maybe_launch();
                return;
            }
            fail(c, "server closed the connection");
        }
        c->inlen += (size_t)n;
        /* consume complete lines */
        size_t start = 0;
        for (;;) {
            char *nl = memmem(c->in + start, c->inlen - start, "\r\n", 2);
            if (!nl)
                break;
            size_t llen = (size_t)(nl - (c->in + start));
            char line[INBUF + 1];
            memcpy(line, c->in + start, llen);
            line[llen] = 0;
            start += llen + 2;
            if (llen < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
                line[2] < '0' || line[2] > '9' || (llen > 3 && line[3] != ' ' && line[3] != '-'))
                fail(c, "malformed reply line: %s", line);
            if (llen > 3 && line[3] == '-')
                continue; /* multi-line reply continues */
            int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
            on_reply(c, code, line);
            if (c->st == S_FREE)
                return;
        }
        if (start > 0) {
            memmove(c->in, c->in + start, c->inlen - start);
            c->inlen -= start;
        }
    }
}

static void on_connected(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        fail(c, "connect: %s", strerror(err));
    c->st = S_GREETING;
    set_events(c, 0);
}

static void maybe_launch(void) {
    if (g_mode == M_HANDSHAKE) {
        if (g_duration > 0 && g_launched < g_total && now() - g_t0 >= g_duration)
            g_total = g_launched; /* time budget spent: finish what is in flight */
        while (g_active < g_conns && g_launched < g_total) {
            for (long i = 0; i < g_conns; i++)
                if (g_c[i].st == S_FREE) {
                    start_conn(&g_c[i]);
                    break;
                }
        }
    } else if (g_mode == M_IDLE) {
        while (g_launched < g_conns && g_setting_up < g_ramp)
            start_conn(&g_c[g_launched]);
    }
}

static void on_usr1(int sig) {
    (void)sig;
    g_release = 1;
}

static void release_idle(void) {
    g_releasing = 1;
    for (long i = 0; i < g_conns; i++)
        if (g_c[i].st == S_IDLE)
            send_cmd(&g_c[i], "QUIT\r\n", S_QUIT);
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P --mode send|handshake|idle [--host 127.0.0.1]\n"
            "  [--conns C] [--msgs M] [--size BYTES] [--total N] [--hold SECS]\n"
            "  [--user U] [--password PW] [--from ADDR] [--rcpt ADDR] [--ramp N]\n"
            "  [--duration SECS] [--timeout SECS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option opts[] = {
        {"host", required_argument, 0, 'H'},     {"port", required_argument, 0, 'p'},
        {"mode", required_argument, 0, 'm'},     {"conns", required_argument, 0, 'c'},
        {"msgs", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"total", required_argument, 0, 't'},    {"hold", required_argument, 0, 'h'},
        {"user", required_argument, 0, 'u'},     {"password", required_argument, 0, 'P'},
        {"from", required_argument, 0, 'f'},     {"rcpt", required_argument, 0, 'r'},
        {"timeout", required_argument, 0, 'T'},  {"ramp", required_argument, 0, 'R'},
        {"duration", required_argument, 0, 'D'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'H': g_host = optarg; break;
        case 'p': g_port = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "send")) g_mode = M_SEND;
            else if (!strcmp(optarg, "handshake")) g_mode = M_HANDSHAKE;
            else if (!strcmp(optarg, "idle")) g_mode = M_IDLE;
            else usage();
            break;
        case 'c': g_conns = atol(optarg); break;
        case 'n': g_msgs = atol(optarg); break;
        case 's': g_size = atol(optarg); break;
        case 't': g_total = atol(optarg); break;
        case 'h': g_hold = atof(optarg); break;
        case 'u': g_user = optarg; break;
        case 'P': g_pass = optarg; break;
        case 'f': g_from = optarg; break;
        case 'r': g_rcpt = optarg; break;
        case 'T': g_timeout = atof(optarg); break;
        case 'R': g_ramp = atol(optarg); break;
        case 'D': g_duration = atof(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || g_port <= 0 || g_port > 65535 || g_conns < 1 || g_conns > 20000 ||
        g_msgs < 1 || g_timeout <= 0 || g_timeout > 3600 || g_ramp < 1 ||
        (g_mode == M_HANDSHAKE && (g_total < 1 || g_total > 10000000)) || g_size > (1L << 30))
        usage();
    if (g_mode != M_HANDSHAKE)
        g_total = g_conns;
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((unsigned short)g_port);
    if (inet_pton(AF_INET, g_host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    if ((ntohl(g_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: refusing non-loopback target %s\n", g_host);
        return 2;
    }

    /* idle mode needs one descriptor per connection */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    char from_buf[300];
    if (!g_from) {
        snprintf(from_buf, sizeof from_buf, strchr(g_user, '@') ? "%s" : "%s@bench.test", g_user);
        g_from = from_buf;
    }
    /* AUTH PLAIN initial response: authzid NUL authcid NUL passwd */
    unsigned char plain[600];
    size_t ul = strlen(g_user), pl = strlen(g_pass);
    if (ul + pl + 2 > sizeof plain)
        usage();
    plain[0] = 0;
    memcpy(plain + 1, g_user, ul);
    plain[1 + ul] = 0;
    memcpy(plain + 2 + ul, g_pass, pl);
    char enc[900];
    b64(plain, ul + pl + 2, enc);
    snprintf(g_auth, sizeof g_auth, "AUTH PLAIN %s\r\n", enc);
    snprintf(g_mailcmd, sizeof g_mailcmd, "MAIL FROM:<%s>\r\n", g_from);
    snprintf(g_rcptcmd, sizeof g_rcptcmd, "RCPT TO:<%s>\r\n", g_rcpt);
    if (g_mode == M_SEND)
        build_message();

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    g_c = calloc((size_t)g_conns, sizeof *g_c);
    if (!g_c) {
        perror("calloc");
        return 2;
    }
    for (long i = 0; i < g_conns; i++) {
        g_c[i].fd = -1;
        g_c[i].slot = (int)i;
        g_c[i].st = S_FREE;
    }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0) {
        perror("epoll_create1");
        return 2;
    }
    g_t0 = now();
    double deadline = g_t0 + g_timeout;

    if (g_mode == M_SEND)
        for (long i = 0; i < g_conns; i++)
            start_conn(&g_c[i]);
    else
        maybe_launch();

    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (t >= deadline)
            fail(NULL, "global timeout of %.0f s reached (%ld of %ld connections finished)",
                 g_timeout, g_finished, g_total);
        if (g_mode == M_IDLE && g_ready_t >= 0 && !g_releasing &&
            (g_release || t - g_t0 - g_ready_t >= g_hold))
            release_idle();
        if (g_mode == M_HANDSHAKE)
            maybe_launch(); /* applies --duration */
        if (g_finished >= g_total && g_active == 0)
            break;
        int wait_ms = (int)((deadline - t) * 1000) + 1;
        if (g_mode == M_IDLE && g_ready_t >= 0 && !g_releasing && wait_ms > 100)
            wait_ms = 100; /* poll the hold timer and SIGUSR1 */
        int n = epoll_wait(g_ep, evs, 256, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 2;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->st == S_FREE)
                continue;
            if (c->st == S_CONNECTING) {
                on_connected(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                flush_out(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
    }
    report_and_exit();
    return 0;
}

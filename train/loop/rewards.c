/*
 * rewards.c: the rewards of RL completions (see rewards.h): reward models
 * through the scorer, the built-in checks (final answer, regex, length),
 * and a reward program on two pipes, then penalty, clip and normalisation.
 *
 * The reward program is `/bin/sh -c CMD` in a process group of its own (so
 * stopping it stops whatever it started), started by rewards_open and kept
 * for every call. A call writes all its lines and reads the answers in one
 * poll() loop over both pipes, both non-blocking, so neither side can
 * block the other however many lines are in flight (a program that
 * answers before it has read everything fills our read pipe while we fill
 * its write pipe: a blocking write here would deadlock). SIGPIPE is
 * blocked in the calling thread around the loop and a write to a closed
 * pipe is an EPIPE, so a program that dies never kills llamac.
 *
 * Extra output: after the n answers of a call the program's output is
 * watched for REWARDS_EXTRA_MS more; a line that arrives then, or any
 * output found at the start of the next call, is an error. The program's
 * stderr is llamac's.
 */
#include "rewards.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../data/rejection.h"
#include "../../data/tok.h"

extern char **environ;

/* How long a just-started program is watched at open for exiting at once
 * (a missing program: sh exits 127 within a few ms; a Python syntax error
 * within ~50 ms). It is paid once per run. */
#define REWARDS_START_MS 100
/* After a call's n answers, how long more output is waited for: long
 * enough for a program that prints two lines per completion to show it,
 * short against a reward call. */
#define REWARDS_EXTRA_MS 30
/* Closing: how long a program has to exit on EOF, then after SIGTERM,
 * before SIGKILL. */
#define REWARDS_EOF_MS 100
#define REWARDS_TERM_MS 500
/* After the program closed its output, how long its exit is waited for
 * (to report its status rather than "closed its output"). */
#define REWARDS_EXIT_MS 1000
/* An answer line longer than this is not a number (bounds the buffer). */
#define REWARDS_LINE_MAX 4096
/* The final answer's buffer in rewards_score. */
#define REWARDS_ANSWER_MAX 1024

enum { SRC_MODEL, SRC_ANSWER, SRC_REGEX, SRC_LENGTH, SRC_CMD };

struct Rewards {
    int n;            /* sources */
    int *kind;        /* (n) SRC_* */
    const char **name; /* (n) borrowed: string literals or spec[k].name */
    double *weight;   /* (n) */
    Scorer *sc;       /* NULL: no reward model */
    ScorerSpec *spec; /* (nm) the models' names */
    int nm;
    char *answer;     /* --reward-answer FIELD, owned, or NULL */
    regex_t re;
    int has_re;
    long lmin, lmax;
    double timeout, penalty, clip;
    int norm;
    /* the reward program */
    char *cmd;        /* owned, NULL: none */
    char qcmd[ERR_QUOTE_CAP]; /* cmd quoted for messages */
    pid_t pid;        /* sh's pid and process group, 0: none (reaped) */
    int wfd, rfd;     /* its stdin and stdout, -1: closed */
    char *buf;        /* output read but not yet taken */
    size_t blen, bcap;
    int eof;          /* its stdout reached EOF */
    size_t answered;  /* answers over the whole run */
    Err failed;       /* sticky: once the program failed, every call fails */
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) && errno == EINTR) {}
}

/* A JSON string of text, invalid UTF-8 replaced by U+FFFD. New reference. */
static json_t *text_json(const char *s) {
    if (!s) s = "";
    json_t *j = json_string(s);
    if (j) return j;
    char *o = NULL;
    size_t cap = 0, m = tok_utf8_lossy(s, strlen(s), &o, &cap);
    j = json_stringn(o ? o : "", m);
    free(o);
    LC_ASSERT(j);
    return j;
}

// ----------------------------------------------------------------------------
// final answers

static int in_set(char c, const char *set) { return c && strchr(set, c); }

/* s[0..len) read whole as a number (white space around allowed): 1 a
 * finite one, -1 an infinity or NaN, 0 not a number. */
static int read_num(const char *s, size_t len, double *x) {
    char t[128];
    while (len && isspace((unsigned char)*s)) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    if (len == 0 || len >= sizeof t) return 0;
    memcpy(t, s, len);
    t[len] = 0;
    char *end;
    *x = strtod(t, &end);
    if (end != t + len) return 0;
    return isfinite(*x) ? 1 : -1;
}

/* The last occurrence of needle in [s, end), or NULL. */
static const char *last_of(const char *s, const char *needle) {
    const char *hit = NULL;
    for (const char *p = s; (p = strstr(p, needle)); p++) hit = p;
    return hit;
}

static int blank(const char *s, const char *end) {
    for (; s < end; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

void rewards_final_answer(const char *text, char *out, size_t n) {
    if (!n) return;
    if (!text) text = "";
    const char *s = NULL, *end = NULL, *textend = text + strlen(text);
    /* the last \boxed{...}, braces nested; an unclosed one is skipped */
    const char *b = last_of(text, "\\boxed{");
    if (b) {
        int depth = 1;
        const char *p = b + 7;
        for (; *p && depth; p++) depth += (*p == '{') - (*p == '}');
        if (!depth) s = b + 7, end = p - 1;
    }
    /* after the last "answer:" to the end of its line; when that is
     * blank, the next non-empty line ("Answer:\n42") */
    if (!s) {
        static const char *const keys[] = {"answer:", "Answer:", "ANSWER:"};
        const char *a = NULL;
        for (int k = 0; k < 3; k++) {
            const char *h = last_of(text, keys[k]);
            if (h && (!a || h > a)) a = h;
        }
        if (a) {
            s = a + 7;
            end = strchr(s, '\n');
            if (!end) end = textend;
            while (blank(s, end) && *end) {
                s = end + 1;
                end = strchr(s, '\n');
                if (!end) end = textend;
            }
        }
    }
    /* the last non-empty line */
    if (!s) {
        s = end = text;
        for (const char *p = text; p <= textend;) {
            const char *nl = strchr(p, '\n');
            if (!nl) nl = textend;
            if (!blank(p, nl)) s = p, end = nl;
            p = nl + 1;
        }
    }
    while (s < end && (isspace((unsigned char)*s) || in_set(*s, "\"'*`$"))) s++;
    while (end > s && (isspace((unsigned char)end[-1]) || in_set(end[-1], "\"'*`$.!,"))) end--;
    size_t m = (size_t)(end - s) < n - 1 ? (size_t)(end - s) : n - 1;
    memcpy(out, s, m);
    out[m] = 0;
}

static int match_one(const char *a, json_t *v) {
    double x, y;
    int an = read_num(a, strlen(a), &x) == 1;
    if (json_is_number(v)) {
        y = json_number_value(v);
        return an && fabs(x - y) <= 1e-6 * fmax(1.0, fabs(y));
    }
    if (!json_is_string(v)) return 0;
    const char *s = json_string_value(v), *end = s + json_string_length(v);
    if (an && read_num(s, (size_t)(end - s), &y) == 1) return fabs(x - y) <= 1e-6 * fmax(1.0, fabs(y));
    while (s < end && isspace((unsigned char)*s)) s++;
    while (end > s && isspace((unsigned char)end[-1])) end--;
    return strlen(a) == (size_t)(end - s) && strncasecmp(a, s, (size_t)(end - s)) == 0;
}

int rewards_answer_match(const char *answer, json_t *v) {
    if (!answer) answer = "";
    if (!json_is_array(v)) return match_one(answer, v);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) if (match_one(answer, x)) return 1;
    return 0;
}

// ----------------------------------------------------------------------------
// the reward program

/* Whether pid has exited (left unreaped, so its pid and process group
 * cannot be reused), waiting up to ms. 1 also when it is not our child. */
static int wait_exit(pid_t pid, long ms) {
    double until = now_s() + 1e-3 * (double)ms;
    for (;;) {
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        if (si.si_pid == pid) return 1;
        if (now_s() >= until) return 0;
        sleep_ms(2);
    }
}

/* Stop the program: EOF on its input, up to grace_ms to exit, SIGTERM,
 * REWARDS_TERM_MS, SIGKILL; whatever is left of its process group is
 * killed, and sh is reaped. Returns 1 when it exited within grace_ms (*st
 * its wait status, -1 if unknown), else 0. */
static int prog_stop(Rewards *r, long grace_ms, int *st) {
    if (r->wfd >= 0) close(r->wfd);
    if (r->rfd >= 0) close(r->rfd);
    r->wfd = r->rfd = -1;
    *st = -1;
    if (r->pid <= 0) return 1;
    int self = wait_exit(r->pid, grace_ms);
    if (!self) {
        kill(-r->pid, SIGTERM);
        wait_exit(r->pid, REWARDS_TERM_MS);
    }
    kill(-r->pid, SIGKILL); /* sh is unreaped, so its group id is still ours */
    int s;
    pid_t w;
    while ((w = waitpid(r->pid, &s, 0)) < 0 && errno == EINTR) {}
    if (w == r->pid) *st = s;
    r->pid = 0;
    return self;
}

/* Read what the program has written; sets eof at its end. */
static void prog_fill(Rewards *r) {
    for (;;) {
        if (r->bcap - r->blen < 4096) {
            r->bcap = r->bcap ? 2 * r->bcap : 8192;
            r->buf = xrealloc(r->buf, r->bcap);
        }
        ssize_t k = read(r->rfd, r->buf + r->blen, r->bcap - r->blen - 1);
        if (k > 0) {
            r->blen += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) r->eof = 1;
        return;
    }
}

/* The program failed: stop it, remember msg for every later call. */
static int prog_fail(Rewards *r, Err *e) {
    int st;
    prog_stop(r, 0, &st);
    r->failed = *e;
    return -1;
}

/* The program's output ended: its exit as one line. at: "right after
 * starting" or "after G of N answers". */
static int prog_dead(Rewards *r, const char *at, Err *e) {
    int st;
    int self = prog_stop(r, REWARDS_EXIT_MS, &st);
    const char *q = r->qcmd;
    if (!self)
        err_set(e, "--reward-cmd '%s': closed its output %s", q, at);
    else if (st == -1)
        err_set(e, "--reward-cmd '%s': exited %s (status unknown)", q, at);
    else if (WIFEXITED(st) && (WEXITSTATUS(st) == 127 || WEXITSTATUS(st) == 126) && r->answered == 0)
        err_set(e, "--reward-cmd '%s': could not start (sh exited with status %d: %s)", q, WEXITSTATUS(st),
                WEXITSTATUS(st) == 127 ? "no such program" : "not executable");
    else if (WIFEXITED(st))
        err_set(e, "--reward-cmd '%s': exited with status %d %s", q, WEXITSTATUS(st), at);
    else
        err_set(e, "--reward-cmd '%s': killed by signal %d %s", q, WTERMSIG(st), at);
    r->failed = *e;
    return -1;
}

static int prog_start(Rewards *r, Err *e) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC)) return err_set(e, "--reward-cmd '%s': could not start (pipe: %s)", r->qcmd, strerror(errno));
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        return err_set(e, "--reward-cmd '%s': could not start (pipe: %s)", r->qcmd, strerror(errno));
    }
    char *argv[] = {(char *)"sh", (char *)"-c", r->cmd, NULL};
    pid_t pid = fork();
    if (pid == 0) { /* only async-signal-safe calls until execve */
        setpgid(0, 0);
        dup2(in[0], 0);
        dup2(out[1], 1);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* nothing else of llamac's (MPI's sockets, files) outlives it in the program */
        long maxfd = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++) close((int)fd);
        execve("/bin/sh", argv, environ);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        return err_set(e, "--reward-cmd '%s': could not start (fork: %s)", r->qcmd, strerror(errno));
    }
    setpgid(pid, pid); /* also here: either side may run first */
    r->pid = pid;
    r->wfd = in[1];
    r->rfd = out[0];
    fcntl(r->wfd, F_SETFL, fcntl(r->wfd, F_GETFL) | O_NONBLOCK);
    fcntl(r->rfd, F_SETFL, fcntl(r->rfd, F_GETFL) | O_NONBLOCK);
    struct pollfd p = {r->rfd, POLLIN, 0};
    if (poll(&p, 1, REWARDS_START_MS) > 0) prog_fill(r);
    if (r->eof) return prog_dead(r, "right after starting", e);
    return 0;
}

/* The first line of the buffer quoted, for a message. */
static const char *first_line(const Rewards *r, char *q, size_t cap) {
    const char *nl = memchr(r->buf, '\n', r->blen);
    return err_quote(q, cap, r->buf, nl ? (size_t)(nl - r->buf) : r->blen);
}

/* items[0..n) through the program: val[i] its answer to item i. */
static int prog_score(Rewards *r, const RewardItem *items, size_t n, double *val, Err *e) {
    char q[ERR_QUOTE_CAP], at[64];
    prog_fill(r);
    if (r->blen) {
        err_set(e, "--reward-cmd '%s': printed a line no completion asked for: '%s'", r->qcmd, first_line(r, q, sizeof q));
        return prog_fail(r, e);
    }
    if (r->eof) {
        snprintf(at, sizeof at, "after 0 of %zu answers", n);
        return prog_dead(r, at, e);
    }
    /* the input: one compact JSON line per item */
    char *in = NULL;
    size_t len = 0, cap = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_is_object(items[i].line) ? json_deep_copy(items[i].line) : json_object();
        json_object_set_new(o, "completion", text_json(items[i].completion));
        json_object_set_new(o, "finish", json_string(items[i].stopped ? "stop" : "length"));
        if (!json_object_get(o, "prompt")) json_object_set_new(o, "prompt", text_json(items[i].prompt_text));
        char *s = json_dumps(o, JSON_COMPACT);
        LC_ASSERT(s);
        size_t sl = strlen(s);
        if (len + sl + 1 > cap) {
            cap = 2 * (len + sl + 1);
            in = xrealloc(in, cap);
        }
        memcpy(in + len, s, sl);
        in[len + sl] = '\n';
        len += sl + 1;
        free(s);
        json_decref(o);
    }
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    size_t woff = 0, got = 0;
    double deadline = now_s() + r->timeout;
    int rc = 0;
    while (got < n) {
        char *nl;
        if (r->eof && r->blen && !memchr(r->buf, '\n', r->blen)) r->buf[r->blen++] = '\n'; /* an unended last line */
        while (got < n && (nl = memchr(r->buf, '\n', r->blen))) {
            size_t ll = (size_t)(nl - r->buf);
            int num = read_num(r->buf, ll, &val[got]);
            if (num != 1) {
                err_set(e, "--reward-cmd '%s': answer %zu: '%s' is not a %snumber", r->qcmd, got + 1,
                        err_quote(q, sizeof q, r->buf, ll), num ? "finite " : "");
                rc = prog_fail(r, e);
                goto out;
            }
            memmove(r->buf, nl + 1, r->blen - ll - 1);
            r->blen -= ll + 1;
            got++;
            r->answered++;
            deadline = now_s() + r->timeout;
        }
        if (got == n && woff < len) { /* it cannot have read them all */
            err_set(e, "--reward-cmd '%s': printed %zu answers before it had read the %zu completions", r->qcmd, n, n);
            rc = prog_fail(r, e);
            goto out;
        }
        if (got == n) break;
        if (r->blen > REWARDS_LINE_MAX) {
            err_set(e, "--reward-cmd '%s': answer %zu: '%s' is not a number", r->qcmd, got + 1, first_line(r, q, sizeof q));
            rc = prog_fail(r, e);
            goto out;
        }
        if (r->eof) {
            snprintf(at, sizeof at, "after %zu of %zu answers", got, n);
            rc = prog_dead(r, at, e);
            goto out;
        }
        double left = deadline - now_s();
        if (left <= 0) {
            err_set(e, "--reward-cmd '%s': no answer within %g s (--reward-timeout)", r->qcmd, r->timeout);
            rc = prog_fail(r, e);
            goto out;
        }
        struct pollfd p[2] = {{r->rfd, POLLIN, 0}, {r->wfd, POLLOUT, 0}};
        int k = poll(p, woff < len ? 2 : 1, (int)fmin(ceil(1e3 * left), 60e3));
        if (k <= 0) continue; /* EINTR, or the deadline: checked above */
        if (woff < len && p[1].revents) {
            ssize_t w = write(r->wfd, in + woff, len - woff);
            if (w > 0)
                woff += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                woff = len; /* EPIPE: it closed its input; its exit or silence is the error */
        }
        if (p[0].revents) prog_fill(r);
    }
    /* extra output: what is already here, or arrives within REWARDS_EXTRA_MS */
    if (!r->blen && !r->eof) {
        struct pollfd p = {r->rfd, POLLIN, 0};
        if (poll(&p, 1, REWARDS_EXTRA_MS) > 0) prog_fill(r);
    }
    if (r->blen) {
        size_t extra = 0;
        for (size_t i = 0; i < r->blen; i++) extra += r->buf[i] == '\n';
        extra += r->buf[r->blen - 1] != '\n';
        err_set(e, "--reward-cmd '%s': printed %zu lines for %zu completions", r->qcmd, n + extra, n);
        rc = prog_fail(r, e);
    }
out:
    if (!sigismember(&old, SIGPIPE)) { /* a SIGPIPE of our writes: take it before unblocking */
        sigset_t pend;
        sigpending(&pend);
        if (sigismember(&pend, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(in);
    return rc;
}

// ----------------------------------------------------------------------------
// open, check, score, close

static int parse_length(Rewards *r, const char *s, Err *e) {
    char q[ERR_QUOTE_CAP];
    const char *colon = strchr(s, ':');
    char *end;
    int ok = colon != NULL;
    if (ok) {
        errno = 0;
        r->lmin = strtol(s, &end, 10);
        ok = end == colon && colon > s && errno == 0;
    }
    if (ok) {
        r->lmax = strtol(colon + 1, &end, 10);
        ok = *end == 0 && end > colon + 1 && errno == 0 && r->lmin >= 0 && r->lmin <= r->lmax;
    }
    if (!ok)
        return err_set(e, "--reward-length: expected MIN:MAX (token counts, 0 <= MIN <= MAX), got '%s'",
                       err_quote(q, sizeof q, s, strlen(s)));
    return 0;
}

static int parse_weights(Rewards *r, const char *spec, Err *e) {
    char q[ERR_QUOTE_CAP], names[200];
    if (!*spec) return err_set(e, "--reward-weights: empty (give name=WEIGHT,...)");
    int *seen = xcalloc((size_t)r->n, sizeof *seen), rc = 0;
    char *copy = strdup(spec), *save = NULL;
    LC_ASSERT(copy);
    for (char *w = strtok_r(copy, ",", &save); w && !rc; w = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(w, '=');
        if (!eq || eq == w) {
            rc = err_set(e, "--reward-weights: expected name=WEIGHT, got '%s'", err_quote(q, sizeof q, w, strlen(w)));
            break;
        }
        *eq = 0;
        int k = 0;
        while (k < r->n && strcmp(r->name[k], w) != 0) k++;
        if (k == r->n) {
            size_t m = 0;
            names[0] = 0;
            for (int j = 0; j < r->n && m < sizeof names; j++)
                m += (size_t)snprintf(names + m, sizeof names - m, "%s%s", j ? ", " : "", r->name[j]);
            rc = err_set(e, "--reward-weights: no source named '%s' (the sources: %s)", err_quote(q, sizeof q, w, strlen(w)),
                         names);
            break;
        }
        char *end;
        double x = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || !isfinite(x))
            rc = err_set(e, "--reward-weights: '%s' is not a number (the weight of %s)",
                         err_quote(q, sizeof q, eq + 1, strlen(eq + 1)), r->name[k]);
        else if (seen[k]++)
            rc = err_set(e, "--reward-weights: %s given twice", r->name[k]);
        else
            r->weight[k] = x;
    }
    free(copy);
    free(seen);
    return rc;
}

static void add_source(Rewards *r, int kind, const char *name, double w) {
    r->kind[r->n] = kind;
    r->name[r->n] = name;
    r->weight[r->n] = w;
    r->n++;
}

int rewards_open(Rewards **out, const RewardOpts *o, Err *e) {
    *out = NULL;
    char q[ERR_QUOTE_CAP];
    Err none;
    if (!e) e = &none;
    if (!o->scorer.spec && !o->answer && !o->regex && !o->length && !o->cmd)
        return err_set(e, "no reward: give --reward-model, --reward-answer, --reward-regex, --reward-length or --reward-cmd");
    if (!(o->timeout >= 0) || !isfinite(o->timeout))
        return err_set(e, "--reward-timeout: %g is not a positive number of seconds", o->timeout);
    if (!(o->clip >= 0) || !isfinite(o->clip)) return err_set(e, "--reward-clip: %g is not a number >= 0", o->clip);
    if (!isfinite(o->missing_eos_penalty))
        return err_set(e, "--missing-eos-penalty: %g is not a finite number", o->missing_eos_penalty);
    Rewards *r = xcalloc(1, sizeof *r);
    r->wfd = r->rfd = -1;
    r->timeout = o->timeout > 0 ? o->timeout : 60;
    r->penalty = o->missing_eos_penalty;
    r->clip = o->clip;
    r->norm = o->norm;
    if (o->scorer.spec && scorer_spec_parse(o->scorer.spec, &r->spec, &r->nm, e)) goto fail;
    int cap = r->nm + 4;
    r->kind = xmalloc((size_t)cap * sizeof *r->kind);
    r->name = xmalloc((size_t)cap * sizeof *r->name);
    r->weight = xmalloc((size_t)cap * sizeof *r->weight);
    for (int k = 0; k < r->nm; k++) add_source(r, SRC_MODEL, r->spec[k].name, r->spec[k].weight);
    if (o->answer) {
        r->answer = strdup(o->answer);
        LC_ASSERT(r->answer);
        add_source(r, SRC_ANSWER, "answer", 1);
    }
    if (o->regex) {
        int rc = regcomp(&r->re, o->regex, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char msg[128];
            regerror(rc, &r->re, msg, sizeof msg);
            err_set(e, "--reward-regex: '%s': %s", err_quote(q, sizeof q, o->regex, strlen(o->regex)), msg);
            goto fail;
        }
        r->has_re = 1;
        add_source(r, SRC_REGEX, "regex", 1);
    }
    if (o->length) {
        if (parse_length(r, o->length, e)) goto fail;
        add_source(r, SRC_LENGTH, "length", 1);
    }
    if (o->cmd) add_source(r, SRC_CMD, "cmd", 1);
    if (o->weights && parse_weights(r, o->weights, e)) goto fail;
    if (o->cmd) { /* before the models: a program that cannot start fails fast, and fork copies less */
        r->cmd = strdup(o->cmd);
        LC_ASSERT(r->cmd);
        err_quote(r->qcmd, sizeof r->qcmd, o->cmd, strlen(o->cmd));
        if (prog_start(r, e)) goto fail;
    }
    if (o->scorer.spec) {
        if (scorer_open(&r->sc, &o->scorer, e)) goto fail;
        LC_ASSERT(scorer_count(r->sc) == r->nm);
    }
    *out = r;
    return 0;
fail:
    rewards_close(r);
    return -1;
}

int rewards_check_line(const Rewards *r, json_t *line, const char *where, Err *e) {
    if (!r->answer) return 0;
    json_t *v = json_object_get(line, r->answer);
    const char *f = r->answer;
    if (!v) return err_set(e, "%s: no \"%s\" field (--reward-answer %s)", where, f, f);
    int ok = json_is_string(v) || json_is_number(v);
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        ok = json_array_size(v) > 0;
        json_array_foreach(v, i, x) ok &= json_is_string(x) || json_is_number(x);
    }
    if (!ok)
        return err_set(e, "%s: \"%s\" must be a string, a number or a non-empty list of them (--reward-answer %s)", where, f,
                       f);
    return 0;
}

int rewards_count(const Rewards *r) { return r->n; }
const char *rewards_name(const Rewards *r, int k) {
    LC_ASSERT(k >= 0 && k < r->n);
    return r->name[k];
}
double rewards_weight(const Rewards *r, int k) {
    LC_ASSERT(k >= 0 && k < r->n);
    return r->weight[k];
}

/* The reward models' values of items[0..n) into v (n, r->n). */
static int score_models(Rewards *r, const RewardItem *items, size_t n, double *v, Err *e) {
    ScoreItem *si = xmalloc(n * sizeof *si);
    double *pm = xmalloc(n * (size_t)r->nm * sizeof *pm), *tm = xmalloc(n * sizeof *tm);
    for (size_t i = 0; i < n; i++) {
        json_t *p = rejection_prompt(items[i].line);
        si[i] = (ScoreItem){p ? p : text_json(items[i].prompt_text), text_json(items[i].completion), NULL};
    }
    int rc = scorer_score(r->sc, si, n, pm, tm, e);
    for (size_t i = 0; i < n; i++) {
        json_decref(si[i].prompt);
        json_decref(si[i].completion);
        for (int k = 0; k < r->nm && !rc; k++) v[i * (size_t)r->n + (size_t)k] = pm[i * (size_t)r->nm + (size_t)k];
    }
    free(si);
    free(pm);
    free(tm);
    return rc;
}

int rewards_score(Rewards *r, const RewardItem *items, size_t n, double *per, double *total, Err *e) {
    if (n == 0) return 0;
    LC_ASSERT(items && total);
    Err none;
    if (!e) e = &none; /* the program's failure is remembered through e */
    if (r->failed.msg[0]) {
        *e = r->failed;
        return -1;
    }
    size_t K = (size_t)r->n;
    double *v = per ? per : xmalloc(n * K * sizeof *v), *cmdv = NULL;
    int rc = 0;
    char where[48], ans[REWARDS_ANSWER_MAX];
    for (size_t i = 0; i < n && !rc; i++) {
        snprintf(where, sizeof where, "item %zu", i);
        rc = rewards_check_line(r, items[i].line, where, e);
    }
    if (!rc && r->sc) rc = score_models(r, items, n, v, e);
    if (!rc && r->cmd) {
        cmdv = xmalloc(n * sizeof *cmdv);
        rc = prog_score(r, items, n, cmdv, e);
    }
    for (size_t i = 0; i < n && !rc; i++) {
        const RewardItem *it = &items[i];
        double t = 0;
        for (size_t k = 0; k < K; k++) {
            double x = v[i * K + k];
            switch (r->kind[k]) {
            case SRC_MODEL: break;
            case SRC_ANSWER:
                rewards_final_answer(it->completion, ans, sizeof ans);
                x = rewards_answer_match(ans, json_object_get(it->line, r->answer));
                break;
            case SRC_REGEX: x = regexec(&r->re, it->completion ? it->completion : "", 0, NULL, 0) == 0; break;
            case SRC_LENGTH: x = it->ntokens >= r->lmin && it->ntokens <= r->lmax; break;
            case SRC_CMD: x = cmdv[i]; break;
            default: LC_FATAL("source kind %d", r->kind[k]);
            }
            v[i * K + k] = x;
            t += r->weight[k] * x;
        }
        if (!it->stopped) t -= r->penalty;
        if (r->clip > 0) t = fmin(fmax(t, -r->clip), r->clip);
        total[i] = t;
    }
    if (!rc && r->norm) { /* (x - mean) / (std + 1e-8), std with Bessel's n - 1; one item: 0 */
        double mean = 0, ss = 0;
        for (size_t i = 0; i < n; i++) mean += total[i];
        mean /= (double)n;
        for (size_t i = 0; i < n; i++) ss += (total[i] - mean) * (total[i] - mean);
        double sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0;
        for (size_t i = 0; i < n; i++) total[i] = (total[i] - mean) / (sd + 1e-8);
    }
    free(cmdv);
    if (!per) free(v);
    return rc;
}

void rewards_close(Rewards *r) {
    if (!r) return;
    int st;
    if (r->pid > 0 || r->wfd >= 0 || r->rfd >= 0) prog_stop(r, REWARDS_EOF_MS, &st);
    if (r->sc) scorer_close(r->sc);
    if (r->has_re) regfree(&r->re);
    free(r->spec);
    free(r->kind);
    free(r->name);
    free(r->weight);
    free(r->answer);
    free(r->cmd);
    free(r->buf);
    free(r);
}

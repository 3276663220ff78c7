/*
 * vmstart: start N VMs at the same instant, each with its own VF, and time each until it runs.
 *
 *   vmstart MARKER TIMEOUT_S VF[,VF...] [key=value ...] -- CMD ... {VF} ...
 *
 * One child per VF runs CMD with every `{VF}` replaced by that VF's address. All children are
 * forked first and wait on one pipe; closing it releases them together (the shape of the paper's
 * concurrent pod starts). A VM has started when MARKER appears on its output (the inner VM's
 * firmware prints it on its serial port once its first instructions ran). The VMs keep running
 * until all have started, failed or TIMEOUT_S passed, so an early VM's exit (which resets its VF
 * under the same device-set lock) cannot delay the others; then all are stopped (SIGTERM, SIGKILL
 * after 5 s). Children die with vmstart (PR_SET_PDEATHSIG), so no VM outlives it.
 *
 * Output, times from CLOCK_MONOTONIC in ns relative to the release:
 *   RESULT vmstart key=value ... i=I vf=BDF pid=PID status=ok|exited|timeout marker_ns=T exit_rc=RC
 *   RESULT vmstart_all key=value ... n=N ok=K wall_ns=T release_mono_ns=T0
 * and the last output line of a VM that did not start as `VMOUT i=I <text>`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_VMS 64

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct vm {
    char vf[32];
    pid_t pid;
    int out;          /* read end of the child's stdout+stderr */
    int64_t marker_ns; /* -1 until the marker is seen */
    int exited, rc;
    char tail[512];   /* the last output, for a VM that does not start */
    size_t tail_len;
};

static char **child_argv(int argc, char **argv, const char *vf) {
    char **out = calloc((size_t)argc + 1, sizeof *out);
    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]) + 1, hits = 0;
        for (const char *p = argv[i]; (p = strstr(p, "{VF}")); p += 4) hits++;
        if (!hits) { out[i] = argv[i]; continue; }
        out[i] = malloc(len + hits * strlen(vf));
        char *w = out[i];
        for (const char *p = argv[i]; *p;) {
            if (!strncmp(p, "{VF}", 4)) { w = stpcpy(w, vf); p += 4; }
            else *w++ = *p++;
        }
        *w = 0;
    }
    return out;
}

static void remember(struct vm *v, const char *buf, ssize_t n) {
    for (ssize_t i = 0; i < n; i++) {
        if (v->tail_len + 1 >= sizeof v->tail) {
            memmove(v->tail, v->tail + sizeof v->tail / 2, sizeof v->tail / 2);
            v->tail_len -= sizeof v->tail / 2;
        }
        v->tail[v->tail_len++] = buf[i];
    }
    v->tail[v->tail_len] = 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int sep = -1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--")) { sep = i; break; }
    if (argc < 6 || sep < 4 || sep + 1 >= argc) {
        fprintf(stderr, "usage: vmstart MARKER TIMEOUT_S VF[,VF...] [key=value ...] -- CMD ... {VF} ...\n");
        return 2;
    }
    const char *marker = argv[1];
    int64_t timeout_ns = (int64_t)(atof(argv[2]) * 1e9);
    struct vm vms[MAX_VMS];
    int n = 0;
    char *list = strdup(argv[3]);
    for (char *tok = strtok(list, ","); tok && n < MAX_VMS; tok = strtok(NULL, ",")) {
        memset(&vms[n], 0, sizeof vms[n]);
        snprintf(vms[n].vf, sizeof vms[n].vf, "%s", tok);
        vms[n].marker_ns = -1;
        n++;
    }
    char labels[1024] = "";
    for (int i = 4; i < sep; i++) {
        strncat(labels, " ", sizeof labels - strlen(labels) - 1);
        strncat(labels, argv[i], sizeof labels - strlen(labels) - 1);
    }
    int gate[2];
    if (pipe(gate)) { perror("pipe"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < n; i++) {
        int out[2];
        if (pipe(out)) { perror("pipe"); return 1; }
        char **cargv = child_argv(argc - sep - 1, argv + sep + 1, vms[i].vf);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(gate[1]);
            char c;
            while (read(gate[0], &c, 1) < 0 && errno == EINTR) {}
            close(gate[0]);
            dup2(out[1], 1);
            dup2(out[1], 2);
            close(out[0]);
            close(out[1]);
            execvp(cargv[0], cargv);
            fprintf(stderr, "exec %s: %s\n", cargv[0], strerror(errno));
            _exit(127);
        }
        close(out[1]);
        vms[i].pid = pid;
        vms[i].out = out[0];
        fcntl(out[0], F_SETFL, O_NONBLOCK);
    }
    close(gate[0]);
    int64_t t0 = now_ns();
    close(gate[1]); /* release every VM at once */
    size_t mlen = strlen(marker);
    int pending = n;
    while (pending > 0 && now_ns() - t0 < timeout_ns) {
        struct pollfd fds[MAX_VMS];
        int idx[MAX_VMS], k = 0;
        for (int i = 0; i < n; i++)
            if (!vms[i].exited && vms[i].out >= 0) { fds[k].fd = vms[i].out; fds[k].events = POLLIN; idx[k++] = i; }
        if (k == 0) break;
        if (poll(fds, (nfds_t)k, 200) < 0 && errno != EINTR) break;
        for (int j = 0; j < k; j++) {
            struct vm *v = &vms[idx[j]];
            if (!(fds[j].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t got = read(v->out, buf, sizeof buf);
            if (got > 0) {
                remember(v, buf, got);
                if (v->marker_ns < 0 && memmem(v->tail, v->tail_len, marker, mlen)) {
                    v->marker_ns = now_ns() - t0;
                    pending--;
                }
            } else if (got == 0 || (got < 0 && errno != EAGAIN)) {
                int st = 0;
                waitpid(v->pid, &st, 0);
                v->exited = 1;
                v->rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                close(v->out);
                v->out = -1;
                if (v->marker_ns < 0) pending--;
            }
        }
    }
    int64_t wall = now_ns() - t0;
    for (int i = 0; i < n; i++)
        if (!vms[i].exited) kill(vms[i].pid, SIGTERM);
    int64_t stop_t = now_ns();
    for (int i = 0; i < n; i++) {
        if (vms[i].exited) continue;
        int st = 0;
        while (waitpid(vms[i].pid, &st, WNOHANG) == 0) {
            if (now_ns() - stop_t > 5000000000LL) { kill(vms[i].pid, SIGKILL); waitpid(vms[i].pid, &st, 0); break; }
            usleep(20000);
        }
        vms[i].rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        const char *status = vms[i].marker_ns >= 0 ? "ok" : (vms[i].exited ? "exited" : "timeout");
        ok += vms[i].marker_ns >= 0;
        printf("RESULT vmstart%s n=%d i=%d vf=%s pid=%d status=%s marker_ns=%lld exit_rc=%d\n", labels, n, i, vms[i].vf,
               (int)vms[i].pid, status, (long long)vms[i].marker_ns, vms[i].rc);
        if (vms[i].marker_ns < 0) {
            for (char *c = vms[i].tail; *c; c++) if (*c == '\n' || *c == '\r') *c = ' ';
            printf("VMOUT i=%d %s\n", i, vms[i].tail_len > 200 ? vms[i].tail + vms[i].tail_len - 200 : vms[i].tail);
        }
    }
    printf("RESULT vmstart_all%s n=%d ok=%d wall_ns=%lld release_mono_ns=%lld\n", labels, n, ok, (long long)wall,
           (long long)t0);
    return ok == n ? 0 : 1;
}

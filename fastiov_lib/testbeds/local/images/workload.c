/* App-test workload for the local testbed: download one file over HTTP/1.0 from the storage
 * server, hash it (FNV-1a 64) while it streams in, print the result and exit.
 * Usage: workload HOST PORT PATH   (HOST is a dotted IPv4 address; the image has no resolver)
 * Output (one line): "bytes=<n> fnv1a64=<16 hex digits> http=<status>"; exit 0 only on HTTP 200
 * with the full Content-Length received. Built with gcc -static. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT PATH\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int fd = -1;
    /* The pod's network may still be settling: retry the connect for up to ~5 s. */
    for (int attempt = 0; attempt < 100; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { perror("socket"); return 3; }
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) break;
        close(fd);
        fd = -1;
        usleep(50000);
    }
    if (fd < 0) { fprintf(stderr, "connect %s:%s: %s\n", argv[1], argv[2], strerror(errno)); return 3; }
    char req[1024];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[3], argv[1]);
    if (len <= 0 || (size_t)len >= sizeof req || write(fd, req, (size_t)len) != len) {
        fprintf(stderr, "request too long or write failed\n");
        return 3;
    }
    static unsigned char buf[65536];
    char head[8192];
    size_t head_len = 0;
    int in_body = 0, status = 0;
    long long content_length = -1, body = 0;
    uint64_t h = FNV_OFFSET;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) { if (errno == EINTR) continue; perror("read"); return 3; }
        if (n == 0) break;
        size_t off = 0;
        if (!in_body) {
            size_t take = (size_t)n;
            if (take > sizeof head - 1 - head_len) take = sizeof head - 1 - head_len;
            memcpy(head + head_len, buf, take);
            head_len += take;
            head[head_len] = 0;
            char *end = strstr(head, "\r\n\r\n");
            if (!end) {
                if (head_len >= sizeof head - 1) { fprintf(stderr, "response header too large\n"); return 3; }
                continue;
            }
            size_t header_bytes = (size_t)(end - head) + 4;
            sscanf(head, "HTTP/%*s %d", &status);
            char *cl = strcasestr(head, "\r\nContent-Length:");
            if (cl) content_length = atoll(cl + 17);
            in_body = 1;
            /* bytes of this read that belong to the body */
            off = header_bytes - (head_len - take);
        }
        h = fnv1a(h, buf + off, (size_t)n - off);
        body += (long long)n - (long long)off;
    }
    close(fd);
    printf("bytes=%lld fnv1a64=%016llx http=%d\n", body, (unsigned long long)h, status);
    fflush(stdout);
    if (status != 200) return 4;
    if (content_length >= 0 && body != content_length) {
        fprintf(stderr, "short body: %lld of %lld bytes\n", body, content_length);
        return 5;
    }
    return 0;
}

/* In-container micro-benchmarks, as the original artifact's mem_lat / file_lat runs measure them:
 *   first- and second-touch latency of a fresh anonymous buffer (the first touch takes the page
 *   faults, and in a VM the host's lazily mapped guest memory), and the latency of reading a few
 *   bytes of a file (the first read goes through the container's file system).
 * Usage: microbench [MEM_BYTES [FILE [FILE_BYTES]]]  (defaults: 1024, /proc/self/exe, 1)
 * Output, one line each, in the original's wording:
 *   Accessing <n> bytes of memory took <s> seconds.
 *   Accessing <n> bytes of memory for the second time took <s> seconds.
 *   Reading <n> bytes took <s> seconds (excluding overhead).
 * Times are CLOCK_MONOTONIC differences minus the cost of reading the clock itself (measured
 * here, the "overhead"). Built with gcc -static. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t clock_overhead_ns(void) {
    int64_t best = INT64_MAX;
    for (int i = 0; i < 64; i++) {
        int64_t a = now_ns(), b = now_ns();
        if (b - a < best) best = b - a;
    }
    return best;
}

static double net_seconds(int64_t dt, int64_t overhead) {
    dt -= overhead;
    return (dt < 0 ? 0 : dt) / 1e9;
}

static void touch(unsigned char *buf, size_t n, unsigned char value) {
    memset(buf, value, n);
    __asm__ volatile("" : : "r"(buf) : "memory");  /* the writes must happen, here */
}

int main(int argc, char **argv) {
    size_t mem_bytes = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
    const char *path = argc > 2 ? argv[2] : "/proc/self/exe";
    size_t file_bytes = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    if (mem_bytes == 0 || file_bytes == 0 || file_bytes > (1 << 20)) {
        fprintf(stderr, "usage: %s [MEM_BYTES>0 [FILE [FILE_BYTES 1..1048576]]]\n", argv[0]);
        return 2;
    }
    int64_t overhead = clock_overhead_ns();

    unsigned char *buf = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        fprintf(stderr, "mmap %zu bytes: %s\n", mem_bytes, strerror(errno));
        return 1;
    }
    int64_t t0 = now_ns();
    touch(buf, mem_bytes, 1);
    int64_t t1 = now_ns();
    touch(buf, mem_bytes, 2);
    int64_t t2 = now_ns();
    printf("Accessing %zu bytes of memory took %.9f seconds.\n", mem_bytes, net_seconds(t1 - t0, overhead));
    printf("Accessing %zu bytes of memory for the second time took %.9f seconds.\n", mem_bytes,
           net_seconds(t2 - t1, overhead));
    fflush(stdout);

    unsigned char *fbuf = malloc(file_bytes);
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fbuf == NULL) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        return 1;
    }
    int64_t t3 = now_ns();
    ssize_t got = read(fd, fbuf, file_bytes);
    int64_t t4 = now_ns();
    close(fd);
    if (got < 0) {
        fprintf(stderr, "read %s: %s\n", path, strerror(errno));
        return 1;
    }
    printf("Reading %zd bytes took %.9f seconds (excluding overhead).\n", got, net_seconds(t4 - t3, overhead));
    return 0;
}

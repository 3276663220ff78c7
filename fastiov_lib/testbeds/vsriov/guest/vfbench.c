/*
 * vfbench: time the kernel paths a VF-backed VM start goes through, inside the virtual SR-IOV guest.
 *
 *   vfbench numvfs   PF N              write N to the PF's sriov_numvfs
 *   vfbench bind     BDF               driver_override=vfio-pci, unbind, drivers_probe
 *   vfbench vfio     BDF [MiB ...]     container + group + device fd (the open), DEVICE_RESET,
 *                                      MAP_DMA/UNMAP_DMA of untouched and of pre-faulted memory
 *   vfbench parallel BDF ...           open + reset + close of every BDF at once, one thread each
 *   vfbench opens    seq|par REPS BDF ...  per VF its own container and group (as separate VMs hold
 *                                      them), then only the device opens (VFIO_GROUP_GET_DEVICE_FD), one
 *                                      after another or all at once, then the closes the same way
 *   vfbench time KIND [k=v ...] -- CMD ...   run CMD (its output to /tmp/vfbench-child.log), time it
 *
 * Every measurement is one line on stdout: `RESULT <kind> key=value ...`, durations in integer
 * nanoseconds from CLOCK_MONOTONIC taken right around the system call being measured. The host
 * parses these lines (fastiov_lib.vsriov.parse_result_line).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Write a string to a sysfs attribute; returns 0 or the errno of the failing call. */
static int sysfs_write(const char *path, const char *value) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return errno;
    ssize_t n = write(fd, value, strlen(value));
    int err = n < 0 ? errno : 0;
    close(fd);
    return err;
}

static const char *last_component(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The name a sysfs link points to (driver, iommu_group), or "none". */
static void link_name(const char *path, char *out, size_t len) {
    char buf[256];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n <= 0) { snprintf(out, len, "none"); return; }
    buf[n] = 0;
    snprintf(out, len, "%s", last_component(buf));
}

static int cmd_numvfs(const char *pf, const char *count) {
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/sriov_numvfs", pf);
    int before = -1;
    FILE *f = fopen(path, "r");
    if (f) { if (fscanf(f, "%d", &before) != 1) before = -1; fclose(f); }
    int64_t t0 = now_ns();
    int err = sysfs_write(path, count);
    int64_t t1 = now_ns();
    /* from -> n: enabling is 0 -> N, disabling N -> 0 */
    printf("RESULT numvfs pf=%s from=%d n=%s errno=%d ns=%lld\n", pf, before, count, err, (long long)(t1 - t0));
    return err ? 1 : 0;
}

static int cmd_bind(const char *bdf) {
    char path[256], drv[256], unbind[320];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver_override", bdf);
    int64_t t0 = now_ns();
    int err = sysfs_write(path, "vfio-pci");
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver", bdf);
    link_name(path, drv, sizeof drv);
    if (!err && strcmp(drv, "none") != 0) {
        snprintf(unbind, sizeof unbind, "/sys/bus/pci/drivers/%s/unbind", drv);
        err = sysfs_write(unbind, bdf);
    }
    int64_t t1 = now_ns();
    if (!err) err = sysfs_write("/sys/bus/pci/drivers_probe", bdf);
    int64_t t2 = now_ns();
    link_name(path, drv, sizeof drv);
    printf("RESULT bind bdf=%s driver=%s errno=%d unbind_ns=%lld probe_ns=%lld total_ns=%lld\n", bdf, drv, err,
           (long long)(t1 - t0), (long long)(t2 - t1), (long long)(t2 - t0));
    return err || strcmp(drv, "vfio-pci") != 0;
}

/* An open VFIO device: the container, its group and the device fd, as a VMM holds them. */
struct vfio_handle {
    int container, group, device;
    char group_name[64];
    int64_t container_ns, set_iommu_ns, device_fd_ns;
};

static int vfio_open(const char *bdf, struct vfio_handle *h, char *err, size_t errlen) {
    char path[256];
    h->container = h->group = h->device = -1;
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
    link_name(path, h->group_name, sizeof h->group_name);
    if (!strcmp(h->group_name, "none")) { snprintf(err, errlen, "no-iommu-group"); return -1; }

    int64_t t0 = now_ns();
    h->container = open("/dev/vfio/vfio", O_RDWR);
    if (h->container < 0) { snprintf(err, errlen, "open-container:%d", errno); return -1; }
    if (ioctl(h->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
        !ioctl(h->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU)) {
        snprintf(err, errlen, "no-type1v2");
        return -1;
    }
    snprintf(path, sizeof path, "/dev/vfio/%s", h->group_name);
    h->group = open(path, O_RDWR);
    if (h->group < 0) { snprintf(err, errlen, "open-group:%d", errno); return -1; }
    struct vfio_group_status status = {.argsz = sizeof status};
    if (ioctl(h->group, VFIO_GROUP_GET_STATUS, &status) || !(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        snprintf(err, errlen, "group-not-viable");
        return -1;
    }
    if (ioctl(h->group, VFIO_GROUP_SET_CONTAINER, &h->container)) {
        snprintf(err, errlen, "set-container:%d", errno);
        return -1;
    }
    int64_t t1 = now_ns();
    if (ioctl(h->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) { snprintf(err, errlen, "set-iommu:%d", errno); return -1; }
    int64_t t2 = now_ns();
    /* The kernel enables the device here; for a VF that includes a function-level reset. */
    h->device = ioctl(h->group, VFIO_GROUP_GET_DEVICE_FD, bdf);
    int64_t t3 = now_ns();
    if (h->device < 0) { snprintf(err, errlen, "get-device-fd:%d", errno); return -1; }
    h->container_ns = t1 - t0;
    h->set_iommu_ns = t2 - t1;
    h->device_fd_ns = t3 - t2;
    return 0;
}

/* Returns the reset's duration, or -1 when the device does not offer a reset, -2 when it failed. */
static int64_t vfio_reset(struct vfio_handle *h) {
    struct vfio_device_info info = {.argsz = sizeof info};
    if (ioctl(h->device, VFIO_DEVICE_GET_INFO, &info) || !(info.flags & VFIO_DEVICE_FLAGS_RESET)) return -1;
    int64_t t0 = now_ns();
    int rc = ioctl(h->device, VFIO_DEVICE_RESET);
    int64_t t1 = now_ns();
    return rc ? -2 : t1 - t0;
}

static int64_t vfio_close(struct vfio_handle *h) {
    int64_t t0 = now_ns();
    if (h->device >= 0) close(h->device);
    if (h->group >= 0) close(h->group);
    if (h->container >= 0) close(h->container);
    return now_ns() - t0;
}

/* Map `mib` MiB of anonymous memory for DMA; pre-faulted memory is touched before the timed call,
 * the way a VMM with pre-allocated guest RAM (or FastIOV's lazy zeroing) leaves it. */
static void map_dma(struct vfio_handle *h, const char *bdf, long mib, int prefault, uint64_t iova) {
    size_t size = (size_t)mib << 20;
    int64_t populate_ns = 0;
    int64_t p0 = now_ns();
    void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        printf("RESULT map_dma bdf=%s mib=%ld memory=%s errno=%d\n", bdf, mib, prefault ? "prefaulted" : "untouched", errno);
        return;
    }
    if (prefault) {
        memset(buf, 0, size);
        populate_ns = now_ns() - p0;
    }
    struct vfio_iommu_type1_dma_map map = {
        .argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)buf, .iova = iova, .size = size};
    int64_t t0 = now_ns();
    int rc = ioctl(h->container, VFIO_IOMMU_MAP_DMA, &map);
    int64_t t1 = now_ns();
    int map_err = rc ? errno : 0;
    struct vfio_iommu_type1_dma_unmap unmap = {.argsz = sizeof unmap, .iova = iova, .size = size};
    int64_t t2 = now_ns();
    int urc = rc ? 0 : ioctl(h->container, VFIO_IOMMU_UNMAP_DMA, &unmap);
    int64_t t3 = now_ns();
    printf("RESULT map_dma bdf=%s mib=%ld memory=%s errno=%d populate_ns=%lld map_ns=%lld unmap_errno=%d unmap_ns=%lld\n",
           bdf, mib, prefault ? "prefaulted" : "untouched", map_err, (long long)populate_ns, (long long)(t1 - t0),
           urc ? errno : 0, (long long)(t3 - t2));
    munmap(buf, size);
}

static int cmd_vfio(const char *bdf, int nsizes, char **sizes) {
    struct vfio_handle h;
    char err[64] = "";
    int64_t t0 = now_ns();
    if (vfio_open(bdf, &h, err, sizeof err)) {
        printf("RESULT vfio_open bdf=%s group=%s error=%s\n", bdf, h.group_name, err);
        vfio_close(&h);
        return 1;
    }
    int64_t t1 = now_ns();
    printf("RESULT vfio_open bdf=%s group=%s container_ns=%lld set_iommu_ns=%lld device_fd_ns=%lld total_ns=%lld\n", bdf,
           h.group_name, (long long)h.container_ns, (long long)h.set_iommu_ns, (long long)h.device_fd_ns,
           (long long)(t1 - t0));
    int64_t reset = vfio_reset(&h);
    printf("RESULT vfio_reset bdf=%s status=%s ns=%lld\n", bdf,
           reset >= 0 ? "ok" : (reset == -1 ? "unsupported" : "failed"), (long long)(reset > 0 ? reset : 0));
    uint64_t iova = 1ULL << 32;
    for (int i = 0; i < nsizes; i++) {
        long mib = atol(sizes[i]);
        if (mib <= 0) continue;
        map_dma(&h, bdf, mib, 0, iova);
        map_dma(&h, bdf, mib, 1, iova);
    }
    int64_t closed = vfio_close(&h);
    printf("RESULT vfio_close bdf=%s ns=%lld\n", bdf, (long long)closed);
    return reset == -2;
}

struct worker {
    const char *bdf;
    pthread_barrier_t *barrier;
    int64_t start_ns, open_ns, reset_ns, close_ns, end_ns;
    char err[64];
};

static void *parallel_worker(void *arg) {
    struct worker *w = arg;
    struct vfio_handle h;
    pthread_barrier_wait(w->barrier);
    w->start_ns = now_ns();
    if (vfio_open(w->bdf, &h, w->err, sizeof w->err) == 0) {
        w->open_ns = now_ns() - w->start_ns;
        w->reset_ns = vfio_reset(&h);
    }
    w->close_ns = vfio_close(&h);
    w->end_ns = now_ns();
    return NULL;
}

/* All VFs opened, reset and closed at once: does the kernel overlap the resets or serialise them? */
static int cmd_parallel(int n, char **bdfs) {
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n + 1);
    struct worker *ws = calloc((size_t)n, sizeof *ws);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    for (int i = 0; i < n; i++) {
        ws[i].bdf = bdfs[i];
        ws[i].barrier = &barrier;
        pthread_create(&threads[i], NULL, parallel_worker, &ws[i]);
    }
    int64_t t0 = now_ns();
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
    int64_t wall = now_ns() - t0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        failed += ws[i].err[0] != 0 || ws[i].reset_ns < 0;
        printf("RESULT parallel_vf n=%d bdf=%s error=%s start_offset_ns=%lld open_ns=%lld reset_ns=%lld close_ns=%lld end_offset_ns=%lld\n",
               n, ws[i].bdf, ws[i].err[0] ? ws[i].err : "none", (long long)(ws[i].start_ns - t0), (long long)ws[i].open_ns,
               (long long)ws[i].reset_ns, (long long)ws[i].close_ns, (long long)(ws[i].end_ns - t0));
    }
    printf("RESULT parallel n=%d failed=%d wall_ns=%lld\n", n, failed, (long long)wall);
    free(ws);
    free(threads);
    return failed != 0;
}

/* One VF of `vfbench opens`: attached (container + group + IOMMU) before the timed device open. */
struct opener {
    const char *bdf;
    struct vfio_handle h;
    pthread_barrier_t *barrier;
    int64_t open_start, open_end, close_start, close_end;
    long tid;
    int err;
};

static void opener_open(struct opener *o) {
    o->tid = syscall(SYS_gettid);
    o->open_start = now_ns();
    o->h.device = ioctl(o->h.group, VFIO_GROUP_GET_DEVICE_FD, o->bdf);
    o->open_end = now_ns();
    o->err = o->h.device < 0 ? errno : 0;
}

static void opener_close(struct opener *o) {
    o->close_start = now_ns();
    if (o->h.device >= 0) close(o->h.device);
    o->h.device = -1;
    o->close_end = now_ns();
}

static void *opener_open_thread(void *arg) {
    struct opener *o = arg;
    pthread_barrier_wait(o->barrier);
    opener_open(o);
    return NULL;
}

static void *opener_close_thread(void *arg) {
    struct opener *o = arg;
    pthread_barrier_wait(o->barrier);
    opener_close(o);
    return NULL;
}

/* Run fn for every opener, one after another (seq) or from one thread each released together (par). */
static int64_t opener_phase(int par, int n, struct opener *os, void (*fn)(struct opener *), void *(*thread_fn)(void *)) {
    int64_t t0;
    if (!par) {
        t0 = now_ns();
        for (int i = 0; i < n; i++) fn(&os[i]);
        return now_ns() - t0;
    }
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n + 1);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    for (int i = 0; i < n; i++) {
        os[i].barrier = &barrier;
        pthread_create(&threads[i], NULL, thread_fn, &os[i]);
    }
    t0 = now_ns();
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
    int64_t wall = now_ns() - t0;
    pthread_barrier_destroy(&barrier);
    free(threads);
    return wall;
}

static int cmd_opens(const char *mode, int reps, int n, char **bdfs) {
    int par = !strcmp(mode, "par");
    struct opener *os = calloc((size_t)n, sizeof *os);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        char err[64] = "";
        os[i].bdf = bdfs[i];
        if (vfio_open(bdfs[i], &os[i].h, err, sizeof err) || os[i].h.device < 0) {
            printf("RESULT opens_error bdf=%s group=%s error=%s\n", bdfs[i], os[i].h.group_name, err);
            failed = 1;
        }
        /* vfio_open also opened the device; close it so the timed opens below start from closed */
        if (os[i].h.device >= 0) close(os[i].h.device);
        os[i].h.device = -1;
    }
    for (int r = 1; r <= reps && !failed; r++) {
        int64_t open_wall = opener_phase(par, n, os, opener_open, opener_open_thread);
        int64_t close_wall = opener_phase(par, n, os, opener_close, opener_close_thread);
        int64_t base = os[0].open_start;
        for (int i = 1; i < n; i++) if (os[i].open_start < base) base = os[i].open_start;
        int errors = 0;
        for (int i = 0; i < n; i++) {
            errors += os[i].err != 0;
            printf("RESULT opens_vf mode=%s rep=%d n=%d bdf=%s group=%s tid=%ld errno=%d open_ns=%lld close_ns=%lld "
                   "open_start_ns=%lld open_end_ns=%lld close_start_ns=%lld close_end_ns=%lld\n",
                   mode, r, n, os[i].bdf, os[i].h.group_name, os[i].tid, os[i].err,
                   (long long)(os[i].open_end - os[i].open_start), (long long)(os[i].close_end - os[i].close_start),
                   (long long)(os[i].open_start - base), (long long)(os[i].open_end - base),
                   (long long)(os[i].close_start - base), (long long)(os[i].close_end - base));
        }
        printf("RESULT opens mode=%s rep=%d n=%d failed=%d open_wall_ns=%lld close_wall_ns=%lld mono_ns=%lld\n", mode, r, n,
               errors, (long long)open_wall, (long long)close_wall, (long long)base);
        failed |= errors != 0;
    }
    for (int i = 0; i < n; i++) vfio_close(&os[i].h);
    free(os);
    return failed;
}

/* Time a whole program (e.g. a QEMU inside this guest starting a VM with or without a VF). */
static int cmd_time(int argc, char **argv) {
    int sep = -1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--")) { sep = i; break; }
    if (sep < 0 || sep + 1 >= argc) {
        fprintf(stderr, "usage: vfbench time KIND [k=v ...] -- CMD ...\n");
        return 2;
    }
    int64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/tmp/vfbench-child.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execvp(argv[sep + 1], argv + sep + 1);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) status = 127 << 8;
    int64_t t1 = now_ns();
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("RESULT %s", argv[0]);
    for (int i = 1; i < sep; i++) printf(" %s", argv[i]);
    printf(" rc=%d ns=%lld\n", rc, (long long)(t1 - t0));
    return rc != 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && !strcmp(argv[1], "numvfs")) return cmd_numvfs(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "bind")) return cmd_bind(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "vfio")) return cmd_vfio(argv[2], argc - 3, argv + 3);
    if (argc >= 3 && !strcmp(argv[1], "parallel")) return cmd_parallel(argc - 2, argv + 2);
    if (argc >= 5 && !strcmp(argv[1], "opens")) return cmd_opens(argv[2], atoi(argv[3]), argc - 4, argv + 4);
    if (argc >= 5 && !strcmp(argv[1], "time")) return cmd_time(argc - 2, argv + 2);
    fprintf(stderr, "usage: vfbench numvfs PF N | bind BDF | vfio BDF [MiB ...] | parallel BDF ... | opens seq|par REPS BDF ... | time KIND -- CMD\n");
    return 2;
}

/*
 * daq_ring_reader: a stand-alone reader of daq-storage ring buffers, written from
 * docs/ring-format.md alone. It attaches read-only (anonymous reader: never slows the
 * writer) holding the anonymous readers' shared lock, so the ring is not replaced under
 * it, prints one line per record still in the ring, and exits.
 *
 *   cc -O2 -std=c11 -o daq_ring_reader daq_ring_reader.c
 *   ./daq_ring_reader [--wait] [--trust-foreign] /dev/shm/daq_storage_ring
 *
 * --wait: stay attached after the last line until standard input reaches end of file.
 * --trust-foreign: read a ring of another user's, one that group or others may write, or
 *   one reached through a symbolic link (ring-format.md, Trust); refused otherwise.
 * Only a regular file is opened: a FIFO, directory or device at the path is refused at
 * once, never waited on.
 *
 * Output, one line per record:
 *   seq=N stream=NAME kind=raw|frame|arrow ts=NS len=BYTES fnv=HEX64
 *   frames add: dtype=<u2 shape=480x640 frame_number=N sum=S
 * and a final line: records=N lost=N
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "DAQRING\0"
#define VERSION 1u
#define ENDIAN_MARK 0x01020304u
#define PAGE 4096u
#define MIN_CAPACITY 65536u
#define MAX_CAPACITY (1ull << 44)
#define POSITION_LIMIT (1ull << 63)
#define OFF_TAIL_INTENT 128
#define OFF_TAIL 136
#define OFF_STREAM_COUNT 296
#define OFF_CHECKPOINTS 512
#define OFF_READERS 1024
#define CHECKPOINTS 64
#define READER_SLOT 128
#define STREAM_SLOT 64
#define SCHEMA_SLOT 16
#define RECORD_HEADER 32
#define FRAME_HEADER 88
#define KIND_PADDING 0
#define KIND_RAW 1
#define KIND_FRAME 2
#define KIND_ARROW 3
#define READER_LOCK_BYTE 1

static const uint8_t *base;
static uint64_t capacity, data_offset, max_streams, streams_offset;

static uint64_t load_acquire(uint64_t offset) {
    return __atomic_load_n((const uint64_t *)(base + offset), __ATOMIC_ACQUIRE);
}
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int fail(const char *what) {
    fprintf(stderr, "daq_ring_reader: %s\n", what);
    return 2;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}

static void print_stream(uint16_t sid) {
    uint64_t count = load_acquire(OFF_STREAM_COUNT);
    if (sid >= count || sid >= max_streams) { printf("stream=?%u", sid); return; }
    const uint8_t *slot = base + streams_offset + (uint64_t)sid * STREAM_SLOT;
    unsigned len = slot[9];
    if (len == 0 || len > 48) { printf("stream=?%u", sid); return; }
    printf("stream=%.*s", (int)len, (const char *)slot + 16);
}

/* Sum of a frame's elements, for the dtypes the test writes (<u2, <u1, <i4, <f4, <f8). */
static void print_frame(const uint8_t *payload, uint32_t n) {
    if (n < FRAME_HEADER) { printf(" frame=short"); return; }
    char dtype[9] = {0};
    memcpy(dtype, payload, 8);
    uint32_t ndim = rd32(payload + 8), meta = rd32(payload + 12);
    uint64_t number = rd64(payload + 16), count = 1;
    if (ndim > 8) { printf(" frame=bad-ndim"); return; }
    printf(" dtype=%s shape=", dtype);
    for (uint32_t i = 0; i < ndim; i++) {
        uint64_t dim = rd64(payload + 24 + 8 * i);
        printf(i ? "x%" PRIu64 : "%" PRIu64, dim);
        count *= dim;
    }
    uint64_t offset = FRAME_HEADER + ((meta + 7u) & ~7u);
    const uint8_t *d = payload + offset;
    uint64_t avail = n >= offset ? n - offset : 0;
    printf(" frame_number=%" PRIu64, number);
    if (!strcmp(dtype, "<u2") && count * 2 == avail) {
        uint64_t s = 0; for (uint64_t i = 0; i < count; i++) s += rd16(d + 2 * i);
        printf(" sum=%" PRIu64, s);
    } else if (!strcmp(dtype, "|u1") && count == avail) {
        uint64_t s = 0; for (uint64_t i = 0; i < count; i++) s += d[i];
        printf(" sum=%" PRIu64, s);
    } else if (!strcmp(dtype, "<i4") && count * 4 == avail) {
        int64_t s = 0; for (uint64_t i = 0; i < count; i++) s += (int32_t)rd32(d + 4 * i);
        printf(" sum=%" PRId64, s);
    } else if (!strcmp(dtype, "<f4") && count * 4 == avail) {
        double s = 0; for (uint64_t i = 0; i < count; i++) { float v; memcpy(&v, d + 4 * i, 4); s += v; }
        printf(" sum=%.6f", s);
    } else if (!strcmp(dtype, "<f8") && count * 8 == avail) {
        double s = 0; for (uint64_t i = 0; i < count; i++) { double v; memcpy(&v, d + 8 * i, 8); s += v; }
        printf(" sum=%.6f", s);
    }
}

/* Whether the file may be read (ring-format.md, Trust): a regular file, owned by this
 * user or root, that neither group nor others may write, unless trust_foreign. */
static const char *untrusted(const struct stat *st, int trust_foreign) {
    if (!S_ISREG(st->st_mode)) return "not a regular file (a FIFO, directory or device?)";
    if (trust_foreign) return NULL;
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return "owned by another user (--trust-foreign to read it anyway)";
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return "writable by group or others (--trust-foreign to read it anyway)";
    return NULL;
}

/* Open the ring and take the anonymous readers' shared lock on byte 1 (ring-format.md,
 * Liveness). Refused only while a creator replacing the file holds its whole-file lock;
 * a file replaced between open and lock no longer has the name: open the path again.
 * On a refusal for what the file is, *why says so and errno is EPERM. */
static int attach(const char *path, int trust_foreign, const char **why) {
    for (int attempt = 0; attempt < 5000; attempt++) {
        struct stat named;
        int found = trust_foreign ? stat(path, &named) : lstat(path, &named);
        if (found != 0) return -1;
        if (S_ISLNK(named.st_mode)) {
            *why = "a symbolic link (--trust-foreign to follow it)";
            errno = EPERM;
            return -1;
        }
        if ((*why = untrusted(&named, trust_foreign)) != NULL) { errno = EPERM; return -1; }
        /* O_NONBLOCK: a FIFO swapped in since the check must not make open() wait. */
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (trust_foreign ? 0 : O_NOFOLLOW));
        if (fd < 0) return -1;
        struct stat opened;
        if (fstat(fd, &opened) != 0 || (*why = untrusted(&opened, trust_foreign)) != NULL) {
            close(fd);
            errno = EPERM;
            return -1;
        }
        struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET,
                             .l_start = READER_LOCK_BYTE, .l_len = 1, .l_pid = 0};
        if (fcntl(fd, F_OFD_SETLK, &lock) == 0) {
            struct stat opened, named;
            if (fstat(fd, &opened) == 0 && stat(path, &named) == 0 &&
                opened.st_dev == named.st_dev && opened.st_ino == named.st_ino)
                return fd;
        } else if (errno != EAGAIN && errno != EACCES) {
            close(fd);
            return -1;
        }
        close(fd);
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    errno = EBUSY;
    return -1;
}

int main(int argc, char **argv) {
    int wait = 0, trust_foreign = 0;
    for (int i = 1; i < argc - 1; i++) {
        if (!strcmp(argv[i], "--wait")) wait = 1;
        else if (!strcmp(argv[i], "--trust-foreign")) trust_foreign = 1;
        else return fail("usage: daq_ring_reader [--wait] [--trust-foreign] RING_FILE");
    }
    if (argc < 2 || argv[argc - 1][0] == '-')
        return fail("usage: daq_ring_reader [--wait] [--trust-foreign] RING_FILE");
    const char *why = NULL;
    int fd = attach(argv[argc - 1], trust_foreign, &why);
    if (fd < 0 && why) {
        fprintf(stderr, "daq_ring_reader: refusing the ring file: %s\n", why);
        return 2;
    }
    if (fd < 0) return fail(errno == EBUSY ? "the ring is being replaced" : "cannot open the ring file");
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 128) return fail("file too small to be a ring");
    base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return fail("mmap failed");

    /* Identity block: validate everything before trusting any offset. */
    if (memcmp(base, MAGIC, 8) != 0) return fail("bad magic");
    if (rd32(base + 8) != VERSION) return fail("unsupported format version");
    if (rd32(base + 12) != ENDIAN_MARK) return fail("byte-order mark mismatch");
    uint64_t header_size = rd64(base + 16);
    capacity = rd64(base + 24);
    uint32_t max_readers = rd32(base + 32);
    max_streams = rd32(base + 36);
    uint32_t max_schemas = rd32(base + 40);
    uint64_t heap = rd64(base + 48);
    if (capacity < MIN_CAPACITY || capacity > MAX_CAPACITY || capacity % PAGE)
        return fail("bad capacity");
    if (max_readers < 1 || max_readers > 1024 || max_streams < 1 || max_streams > 4096 ||
        max_schemas < 1 || max_schemas > 65536 || heap % 8) return fail("bad geometry");
    streams_offset = OFF_READERS + (uint64_t)max_readers * READER_SLOT;
    uint64_t end = streams_offset + max_streams * STREAM_SLOT + (uint64_t)max_schemas * SCHEMA_SLOT + heap;
    uint64_t expect_header = (end + PAGE - 1) / PAGE * PAGE;
    if (header_size != expect_header) return fail("header_size does not match the geometry");
    if ((uint64_t)st.st_size != header_size + capacity) return fail("file size does not match");
    data_offset = header_size;

    /* Start at the oldest record still in the ring. */
    uint64_t tail = load_acquire(OFF_TAIL);
    uint64_t intent = load_acquire(OFF_TAIL_INTENT);
    if (intent >= POSITION_LIMIT || intent < tail) return fail("bad tail_intent");
    uint64_t pos = 0, next_seq = 0, records = 0, lost = 0;
    int have_seq = 0;
    if (intent > capacity) {
        uint64_t best = UINT64_MAX;
        for (int i = 0; i < CHECKPOINTS; i++) {
            uint64_t p = load_acquire(OFF_CHECKPOINTS + 8 * i);
            if (p < tail && intent - p <= capacity && p < best) best = p;
        }
        if (best == UINT64_MAX) return fail("no valid starting record");
        pos = best;
    }
    while (pos < (tail = load_acquire(OFF_TAIL))) {
        uint64_t idx = pos % capacity, room = capacity - idx;
        if (room < RECORD_HEADER) { pos += room; continue; }
        const uint8_t *at = base + data_offset + idx;
        uint8_t header[RECORD_HEADER];
        memcpy(header, at, RECORD_HEADER);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (load_acquire(OFF_TAIL_INTENT) - pos > capacity) return fail("lapped by the writer");
        uint32_t length = rd32(header);
        uint16_t kind = rd16(header + 4), sid = rd16(header + 6);
        uint64_t seq = rd64(header + 8), ts = rd64(header + 16);
        if (length < RECORD_HEADER || length > room) return fail("record length out of bounds");
        uint64_t size = (length + 7u) & ~7u;
        if (pos + size > tail) return fail("record extends past the tail");
        if (kind == KIND_PADDING) { pos += size; continue; }
        uint32_t n = length - RECORD_HEADER;
        uint8_t *payload = malloc(n ? n : 1);  /* n <= capacity: bounded */
        if (!payload) return fail("out of memory");
        memcpy(payload, at + RECORD_HEADER, n);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (load_acquire(OFF_TAIL_INTENT) - pos > capacity) { free(payload); return fail("lapped by the writer"); }
        if (have_seq && seq > next_seq) lost += seq - next_seq;
        next_seq = seq + 1;
        have_seq = 1;
        const char *kinds[] = {"padding", "raw", "frame", "arrow"};
        printf("seq=%" PRIu64 " ", seq);
        print_stream(sid);
        printf(" kind=%s ts=%" PRIu64 " len=%u fnv=%016" PRIx64, kind <= 3 ? kinds[kind] : "?", ts, n,
               fnv1a(payload, n));
        if (kind == KIND_FRAME) print_frame(payload, n);
        printf("\n");
        free(payload);
        records++;
        pos += size;
    }
    printf("records=%" PRIu64 " lost=%" PRIu64 "\n", records, lost);
    fflush(stdout);
    if (wait) {
        char sink[256];
        while (read(STDIN_FILENO, sink, sizeof sink) > 0) {}
    }
    munmap((void *)base, (size_t)st.st_size);
    close(fd); /* releases the lock */
    return 0;
}

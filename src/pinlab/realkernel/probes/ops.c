/* The op interpreter: one function per op of pinlab/realkernel/ops.py. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pinprobe.h"

#define DIO_FILE "/mnt/ext4/dio"
#define PINS_SETTLE_TIMEOUT_S 10.0

struct region {
	char name[MAX_WORD];
	char *addr;
	size_t size;
	unsigned long long *saved; /* pagemap entries saved by pagemap_save */
};

static struct region regions[MAX_REGIONS];
static int nregions;
static char *arena, *arena_next;
static int ring_fd = -1;
static struct counters begin;

static struct region *region(const char *name)
{
	for (int i = 0; i < nregions; i++)
		if (!strcmp(regions[i].name, name))
			return &regions[i];
	errno = ENOENT;
	die("unknown-region");
}

/* the byte range [off, off + len) of r, which must lie inside it */
static char *range(struct region *r, long off, long len)
{
	if (off < 0 || len < 0 || (size_t)off > r->size || (size_t)len > r->size - off) {
		errno = ERANGE;
		die("range-outside-region");
	}
	return r->addr + off;
}

static void fill_file(int fd, size_t size)
{
	static char zeros[65536];
	size_t done = 0;

	while (done < size) {
		size_t n = size - done < sizeof(zeros) ? size - done : sizeof(zeros);
		ssize_t w = write(fd, zeros, n);

		if (w <= 0)
			die("fill-file");
		done += w;
	}
	if (fsync(fd))
		die("fsync");
}

static void op_map(struct op *o)
{
	const char *name = o->tok[1], *kind = o->tok[2];
	long size = num(o->tok[3]);
	int shared = !strcmp(o->tok[4], "shared");
	int adjacent = !strcmp(o->tok[5], "adjacent");
	int flags = (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd = -1;
	struct region *r;
	char *at, path[128];

	if (nregions == MAX_REGIONS || strlen(name) >= MAX_WORD || size <= 0) {
		errno = EINVAL;
		die("map-arguments");
	}
	if (!arena) {
		/* one PROT_NONE reservation: regions are placed in it, so gaps are inaccessible */
		char *raw = mmap(NULL, ARENA + HPAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (raw == MAP_FAILED)
			die("arena");
		arena = (char *)(((unsigned long)raw + HPAGE - 1) & ~(HPAGE - 1));
		arena_next = arena + HPAGE;
	}
	at = arena_next;
	if (!adjacent)
		at = (char *)(((unsigned long)arena_next + HPAGE - 1) & ~(HPAGE - 1)) + HPAGE;
	/* MAP_FIXED must stay inside the reservation, leaving PROT_NONE after the region */
	if ((unsigned long)size > ARENA || at + size + HPAGE > arena + ARENA) {
		errno = ENOMEM;
		die("arena-full");
	}
	if (!strcmp(kind, "anon")) {
		flags |= MAP_ANONYMOUS;
	} else if (!strcmp(kind, "hugetlb")) {
		flags |= MAP_ANONYMOUS | MAP_HUGETLB;
	} else if (!strcmp(kind, "memfd")) {
		fd = memfd_create(name, 0);
		if (fd < 0)
			die("memfd_create");
		fill_file(fd, size);
	} else {
		snprintf(path, sizeof(path), "/mnt/%s/%s", kind, name);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			die("open-backing-file");
		fill_file(fd, size);
	}
	if (mmap(at, size, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED) {
		if (!strcmp(kind, "hugetlb") && errno == ENOMEM)
			unmet("no-free-hugetlb-pages");
		die("mmap");
	}
	r = &regions[nregions++];
	strcpy(r->name, name);
	r->addr = at;
	r->size = size;
	r->saved = NULL;
	arena_next = at + size;
}

static void op_touch(struct op *o)
{
	struct region *r = region(o->tok[1]);
	long off = num(o->tok[2]), len = num(o->tok[3]);
	volatile char *p = range(r, off, len);

	for (long i = 0; i < len; i += PAGE)
		p[i] = 1;
}

static void op_madvise(struct op *o)
{
	struct region *r = region(o->tok[1]);
	const char *a = o->tok[2];
	int advice = !strcmp(a, "hugepage") ? MADV_HUGEPAGE :
		     !strcmp(a, "nohugepage") ? MADV_NOHUGEPAGE :
		     !strcmp(a, "dontneed") ? MADV_DONTNEED : -1;
	long off = num(o->tok[3]), len = num(o->tok[4]);

	if (advice < 0) {
		errno = EINVAL;
		die("madvise-advice");
	}
	if (madvise(range(r, off, len), len, advice))
		die("madvise");
}

static void op_mprotect(struct op *o)
{
	struct region *r = region(o->tok[1]);
	const char *p = o->tok[4];
	long off = num(o->tok[2]), len = num(o->tok[3]);
	int prot = !strcmp(p, "none") ? PROT_NONE : !strcmp(p, "r") ? PROT_READ :
		   !strcmp(p, "rw") ? PROT_READ | PROT_WRITE : -1;

	if (prot < 0) {
		errno = EINVAL;
		die("mprotect-prot");
	}
	if (mprotect(range(r, off, len), len, prot))
		die("mprotect");
}

static void op_require_thp(struct op *o)
{
	struct region *r = region(o->tok[1]);
	long off = num(o->tok[2]), len = num(o->tok[3]);
	long kb = smaps_field(range(r, off, len), "AnonHugePages");

	if (kb * 1024 < len)
		unmet("no-transparent-huge-page");
}

static void emit_pins(const char *obs, const struct counters *c)
{
	emit("%s.acquired=%llu", obs, c->pin_acq - begin.pin_acq);
	emit("%s.released=%llu", obs, c->pin_rel - begin.pin_rel);
}

static void op_pins_end(struct op *o)
{
	struct counters c;

	read_counters(&c);
	emit_pins(o->tok[1], &c);
}

/* the eventual state: once no pin is held anywhere (asynchronous releases have happened) */
static void op_pins_settle(struct op *o)
{
	struct counters c;

	if (!pins_idle(PINS_SETTLE_TIMEOUT_S)) {
		errno = ETIMEDOUT;
		die("pins-settle");
	}
	read_counters(&c);
	emit_pins(o->tok[1], &c);
}

/* block I/O submitted since pins_begin, in KiB (v6.1 block/blk-core.c submit_bio) */
static void op_pgpg_end(struct op *o)
{
	struct counters c;

	read_counters(&c);
	emit("%s.pgpgin=%llu", o->tok[1], c.pgpgin - begin.pgpgin);
	emit("%s.pgpgout=%llu", o->tok[1], c.pgpgout - begin.pgpgout);
}

static void op_uring_close(void)
{
	if (close(ring_fd))
		die("io_uring-close");
	ring_fd = -1;
}

/* errnos as returned by v6.1 io_uring/rsrc.c io_sqe_buffers_register / io_pin_pages */
static void op_uring_register(struct op *o)
{
	struct region *r = region(o->tok[2]);
	long off = num(o->tok[3]), len = num(o->tok[4]);
	/* only the start must be inside: partial-failure probes register past the region's end */
	struct iovec iov = { range(r, off, 0), len };
	long ret;

	if (ring_fd < 0) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		ring_fd = syscall(__NR_io_uring_setup, 8, &p);
		if (ring_fd < 0)
			die("io_uring_setup");
	}
	ret = syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_BUFFERS, &iov, 1);
	emit("%s=%s", o->tok[1], errname(ret < 0 ? errno : 0));
}

/* ENXIO when nothing is registered (v6.1 io_uring/rsrc.c io_sqe_buffers_unregister) */
static void op_uring_unregister(struct op *o)
{
	long ret = syscall(__NR_io_uring_register, ring_fd, IORING_UNREGISTER_BUFFERS, NULL, 0);

	emit("%s=%s", o->tok[1], errname(ret < 0 ? errno : 0));
}

static void op_pagemap_save(struct op *o)
{
	struct region *r = region(o->tok[1]);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	size_t n = r->size / PAGE;

	if (fd < 0)
		die("pagemap");
	free(r->saved);
	r->saved = malloc(n * sizeof(*r->saved));
	if (!r->saved)
		die("malloc");
	for (size_t i = 0; i < n; i++)
		r->saved[i] = pagemap_entry(fd, r->addr + i * PAGE);
	close(fd);
}

/* per page: s same frame, d different frame, n not present now, f present now but not then */
static void op_pagemap_cmp(struct op *o)
{
	struct region *r = region(o->tok[2]);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	size_t n = r->size / PAGE, len = 0;
	char out[512], prev = 0;
	long run = 0;

	if (fd < 0 || !r->saved)
		die("pagemap-cmp");
	out[0] = 0;
	for (size_t i = 0; i <= n; i++) {
		char c = 0;

		if (i < n) {
			unsigned long long now = pagemap_entry(fd, r->addr + i * PAGE), then = r->saved[i];
			const unsigned long long present = 1ULL << 63, pfn = (1ULL << 55) - 1;

			c = !(now & present) ? 'n' : !(then & present) ? 'f' :
			    (now & pfn) == (then & pfn) ? 's' : 'd';
		}
		if (c == prev) {
			run++;
			continue;
		}
		if (prev) {
			int w = snprintf(out + len, sizeof(out) - len, "%c%ld", prev, run);

			if (w < 0 || (size_t)w >= sizeof(out) - len) {
				errno = E2BIG;
				die("pagemap-cmp-output");
			}
			len += w;
		}
		prev = c;
		run = 1;
	}
	close(fd);
	emit("%s=%s", o->tok[1], out);
}

/* each one-byte iovec becomes one pipe buffer holding one page reference (v6.1 fs/splice.c
 * iter_to_pipe: iov_iter_get_pages2, user_page_pipe_buf_ops); pipes stay open until exit */
static void op_vmsplice(struct op *o)
{
	struct region *r = region(o->tok[1]);
	char *p = range(r, num(o->tok[2]), 1);
	long left = num(o->tok[3]);
	static struct iovec iov[1024];

	for (int i = 0; i < 1024; i++) {
		iov[i].iov_base = p;
		iov[i].iov_len = 1;
	}
	while (left > 0) {
		int pfd[2];
		long slots, room;

		if (pipe(pfd))
			die("pipe");
		slots = fcntl(pfd[1], F_SETPIPE_SZ, 256 * PAGE);
		if (slots < 0)
			die("F_SETPIPE_SZ");
		room = slots / PAGE;
		while (room > 0 && left > 0) {
			long chunk = left < room ? left : room;
			ssize_t got;

			if (chunk > 1024)
				chunk = 1024;
			got = vmsplice(pfd[1], iov, chunk, 0);
			if (got <= 0)
				die("vmsplice");
			room -= got;
			left -= got;
		}
	}
}

/* the ext4 file O_DIRECT ops use: written, fsync()ed, then sync() so that no writeback or
 * journal commit is left to land in a later pgpg measurement */
static void op_dio_file(struct op *o)
{
	long size = num(o->tok[1]);
	int fd = open(DIO_FILE, O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || size < 0)
		die("dio-file");
	fill_file(fd, size);
	close(fd);
	sync();
}

static void op_odirect(struct op *o, int write_it)
{
	struct region *r = region(o->tok[2]);
	long off = num(o->tok[3]), len = num(o->tok[4]);
	char *p = range(r, off, len);
	int fd = open(DIO_FILE, (write_it ? O_WRONLY : O_RDONLY) | O_DIRECT);
	ssize_t got;

	if (fd < 0)
		die("dio-open");
	got = write_it ? pwrite(fd, p, len, 0) : pread(fd, p, len, 0);
	if (got < 0)
		emit("%s=%s", o->tok[1], errname(errno));
	else
		emit("%s=%zd", o->tok[1], got);
	close(fd);
}

static void op_process_vm_readv(struct op *o)
{
	struct region *src = region(o->tok[2]), *dst = region(o->tok[5]);
	long len = num(o->tok[4]);
	struct iovec remote = { range(src, num(o->tok[3]), len), len };
	struct iovec local = { range(dst, num(o->tok[6]), len), len };
	ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

	if (got < 0)
		emit("%s=%s", o->tok[1], errname(errno));
	else
		emit("%s=%zd", o->tok[1], got);
}

/* the ops up to the matching endfork run in the child; returns the index after endfork */
static int op_fork(struct op *ops, int i, int n)
{
	int depth = 1, j, status;
	pid_t pid;

	for (j = i + 1; j < n; j++) {
		if (!strcmp(ops[j].tok[0], "fork"))
			depth++;
		else if (!strcmp(ops[j].tok[0], "endfork") && --depth == 0)
			break;
	}
	if (j == n) {
		errno = EINVAL;
		die("fork-without-endfork");
	}
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		in_fork_child = 1;
		_exit(run_ops(ops + i + 1, j - i - 1));
	}
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid");
	/* the child already reported its own error or unmet precondition */
	if (WIFEXITED(status) && (WEXITSTATUS(status) == EXIT_ERROR || WEXITSTATUS(status) == EXIT_UNMET))
		_exit(WEXITSTATUS(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		errno = ECHILD;
		die("fork-child-failed");
	}
	return j + 1;
}

int run_ops(struct op *ops, int n)
{
	for (int i = 0; i < n;) {
		struct op *o = &ops[i];
		const char *t = o->tok[0];

		if (!strcmp(t, "fork")) {
			i = op_fork(ops, i, n);
			continue;
		}
		if (!strcmp(t, "map"))
			op_map(o);
		else if (!strcmp(t, "touch"))
			op_touch(o);
		else if (!strcmp(t, "madvise"))
			op_madvise(o);
		else if (!strcmp(t, "mprotect"))
			op_mprotect(o);
		else if (!strcmp(t, "drain"))
			drain();
		else if (!strcmp(t, "require_thp"))
			op_require_thp(o);
		else if (!strcmp(t, "pins_begin"))
			read_counters(&begin);
		else if (!strcmp(t, "pins_end"))
			op_pins_end(o);
		else if (!strcmp(t, "pins_settle"))
			op_pins_settle(o);
		else if (!strcmp(t, "pgpg_end"))
			op_pgpg_end(o);
		else if (!strcmp(t, "uring_close"))
			op_uring_close();
		else if (!strcmp(t, "uring_register"))
			op_uring_register(o);
		else if (!strcmp(t, "uring_unregister"))
			op_uring_unregister(o);
		else if (!strcmp(t, "pagemap_save"))
			op_pagemap_save(o);
		else if (!strcmp(t, "pagemap_cmp"))
			op_pagemap_cmp(o);
		else if (!strcmp(t, "smaps"))
			emit("%s=%ld", o->tok[1], smaps_field(region(o->tok[2])->addr, o->tok[3]));
		else if (!strcmp(t, "vmsplice"))
			op_vmsplice(o);
		else if (!strcmp(t, "dio_file"))
			op_dio_file(o);
		else if (!strcmp(t, "odirect_read"))
			op_odirect(o, 0);
		else if (!strcmp(t, "odirect_write"))
			op_odirect(o, 1);
		else if (!strcmp(t, "process_vm_readv"))
			op_process_vm_readv(o);
		else {
			errno = EINVAL;
			die("unexpected-op");
		}
		i++;
	}
	return 0;
}

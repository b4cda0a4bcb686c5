/*
 * pinprobe: runs pinlab probe op lists inside the guest.
 *
 *   pinprobe run FILE             every case of FILE, each in a fresh exec'ed process,
 *                                 results framed on stdout (the serial console)
 *   pinprobe case FILE INDEX [V]  one case (internal); V binds the case's search variable
 *   pinprobe say TEXT             TEXT as one frame (the init script's fatal errors)
 *
 * The op list language is documented in pinlab/realkernel/ops.py; this file and the
 * model evaluator implement the same semantics.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define HPAGE (2UL << 20)
#define ARENA (1UL << 30)
#define MAX_TOK 16
#define MAX_OPS 256
#define MAX_CASES 128
#define MAX_REGIONS 16
#define MAX_LINE 512
#define CASE_TIMEOUT_S 60
#define EXIT_UNMET 3

struct op {
	int ntok;
	char *tok[MAX_TOK];
};

struct pcase {
	char name[64];
	int has_search;
	char var[16];
	long lo, hi;
	char key[64];
	char want[64];
	int nops;
	struct op ops[MAX_OPS];
};

struct region {
	char name[32];
	char *addr;
	size_t size;
	unsigned long long *saved; /* pagemap entries saved by pagemap_save */
};

static struct pcase cases[MAX_CASES];
static int ncases;
static struct region regions[MAX_REGIONS];
static int nregions;
static char *arena, *arena_next;
static int ring_fd = -1;
static unsigned long long pins_acq0, pins_rel0;
static const char *bind_var;
static long bind_val;

/* ---- output: observation lines go to stdout (a pipe read by the runner) ---- */

static void emit(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(1, buf, n) < 0)
		_exit(2);
}

static const char *errname(int e)
{
	const char *s = e ? strerrorname_np(e) : "ok";

	return s ? s : "E?";
}

static void die(const char *what)
{
	emit("status=error");
	emit("detail=%s:%s", what, errname(errno));
	_exit(2);
}

static void unmet(const char *why)
{
	emit("status=unmet");
	emit("detail=%s", why);
	_exit(EXIT_UNMET);
}

/* ---- parsing ---- */

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	if (!d)
		die("strdup");
	return d;
}

static void parse_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[MAX_LINE];
	struct pcase *c = NULL;

	if (!f)
		die("open-cases");
	while (fgets(line, sizeof(line), f)) {
		char *save, *t = strtok_r(line, " \t\r\n", &save);

		if (!t || t[0] == '#')
			continue;
		if (!strcmp(t, "case")) {
			if (ncases == MAX_CASES)
				die("too-many-cases");
			c = &cases[ncases++];
			memset(c, 0, sizeof(*c));
			snprintf(c->name, sizeof(c->name), "%s", strtok_r(NULL, " \t\r\n", &save));
		} else if (!c) {
			die("op-outside-case");
		} else if (!strcmp(t, "search")) {
			c->has_search = 1;
			snprintf(c->var, sizeof(c->var), "%s", strtok_r(NULL, " \t\r\n", &save));
			c->lo = atol(strtok_r(NULL, " \t\r\n", &save));
			c->hi = atol(strtok_r(NULL, " \t\r\n", &save));
			snprintf(c->key, sizeof(c->key), "%s", strtok_r(NULL, " \t\r\n", &save));
			snprintf(c->want, sizeof(c->want), "%s", strtok_r(NULL, " \t\r\n", &save));
		} else if (!strcmp(t, "end")) {
			c = NULL;
		} else {
			struct op *o;

			if (c->nops == MAX_OPS)
				die("too-many-ops");
			o = &c->ops[c->nops++];
			o->ntok = 0;
			for (; t && o->ntok < MAX_TOK; t = strtok_r(NULL, " \t\r\n", &save))
				o->tok[o->ntok++] = xstrdup(t);
		}
	}
	fclose(f);
}

static long num(const char *s)
{
	if (s[0] == '$') {
		if (!bind_var || strcmp(s + 1, bind_var))
			die("unbound-variable");
		return bind_val;
	}
	return strtol(s, NULL, 0);
}

static struct region *region(const char *name)
{
	for (int i = 0; i < nregions; i++)
		if (!strcmp(regions[i].name, name))
			return &regions[i];
	errno = ENOENT;
	die("unknown-region");
	return NULL;
}

/* ---- kernel state readers ---- */

static void read_pins(unsigned long long *acq, unsigned long long *rel)
{
	char line[256];
	FILE *f;
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY);

	/* fold the per-CPU vmstat diffs into the global counters before reading */
	if (fd < 0 || write(fd, "1\n", 2) < 0) {
		if (fd < 0)
			die("stat_refresh");
	}
	close(fd);
	f = fopen("/proc/vmstat", "r");
	if (!f)
		die("vmstat");
	*acq = *rel = ~0ULL;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "nr_foll_pin_acquired %llu", acq);
		sscanf(line, "nr_foll_pin_released %llu", rel);
	}
	fclose(f);
	if (*acq == ~0ULL || *rel == ~0ULL) {
		errno = ENOENT;
		die("nr_foll_pin-counters");
	}
}

static unsigned long long pagemap_entry(int fd, char *addr)
{
	unsigned long long e;

	if (pread(fd, &e, 8, ((unsigned long)addr / PAGE) * 8) != 8)
		die("pagemap-read");
	return e;
}

static long smaps_field(char *addr, const char *field)
{
	char line[256];
	FILE *f = fopen("/proc/self/smaps", "r");
	int inside = 0;
	size_t flen = strlen(field);

	if (!f)
		die("smaps");
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			inside = (unsigned long)addr >= lo && (unsigned long)addr < hi;
			continue;
		}
		if (inside && !strncmp(line, field, flen) && line[flen] == ':') {
			fclose(f);
			return atol(line + flen + 1);
		}
	}
	fclose(f);
	errno = ENOENT;
	die("smaps-field");
	return -1;
}

/* one lru_add_drain() on this CPU: MADV_POPULATE_READ ends with it (v6.1 mm/gup.c) */
static void drain(void)
{
	static char *scratch;

	if (!scratch) {
		scratch = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (scratch == MAP_FAILED)
			die("drain-mmap");
	}
	if (madvise(scratch, PAGE, MADV_POPULATE_READ))
		die("drain-madvise");
}

/* ---- ops ---- */

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
	size_t size = num(o->tok[3]);
	int shared = !strcmp(o->tok[4], "shared");
	int adjacent = !strcmp(o->tok[5], "adjacent");
	int flags = (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd = -1;
	struct region *r;
	char *at, path[128];

	if (nregions == MAX_REGIONS)
		die("too-many-regions");
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
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->addr = at;
	r->size = size;
	r->saved = NULL;
	arena_next = at + size;
}

static void op_touch(struct op *o)
{
	struct region *r = region(o->tok[1]);
	size_t off = num(o->tok[2]), len = num(o->tok[3]);

	for (size_t i = off; i < off + len; i += PAGE)
		((volatile char *)r->addr)[i] = 1;
}

static void op_madvise(struct op *o)
{
	struct region *r = region(o->tok[1]);
	const char *a = o->tok[2];
	int advice = !strcmp(a, "hugepage") ? MADV_HUGEPAGE :
		     !strcmp(a, "nohugepage") ? MADV_NOHUGEPAGE :
		     !strcmp(a, "dontneed") ? MADV_DONTNEED : -1;

	if (advice < 0) {
		errno = EINVAL;
		die("madvise-advice");
	}
	if (madvise(r->addr + num(o->tok[3]), num(o->tok[4]), advice))
		die("madvise");
}

static void op_mprotect(struct op *o)
{
	struct region *r = region(o->tok[1]);
	const char *p = o->tok[4];
	int prot = !strcmp(p, "none") ? PROT_NONE : !strcmp(p, "r") ? PROT_READ : PROT_READ | PROT_WRITE;

	if (mprotect(r->addr + num(o->tok[2]), num(o->tok[3]), prot))
		die("mprotect");
}

static void op_require_thp(struct op *o)
{
	struct region *r = region(o->tok[1]);
	long kb = smaps_field(r->addr + num(o->tok[2]), "AnonHugePages");

	if (kb * 1024 < num(o->tok[3]))
		unmet("no-transparent-huge-page");
}

static void op_pins_end(struct op *o)
{
	unsigned long long a, r;

	read_pins(&a, &r);
	emit("%s.acquired=%llu", o->tok[1], a - pins_acq0);
	emit("%s.released=%llu", o->tok[1], r - pins_rel0);
}

/* eventual state: refresh and read until five reads 20 ms apart agree (at most ~5 s) */
static void op_pins_settle(struct op *o)
{
	unsigned long long a, r, pa = ~0ULL, pr = ~0ULL;
	int stable = 0;

	for (int i = 0; i < 250 && stable < 5; i++) {
		read_pins(&a, &r);
		stable = (a == pa && r == pr) ? stable + 1 : 0;
		pa = a;
		pr = r;
		usleep(20000);
	}
	if (stable < 5) {
		errno = ETIMEDOUT;
		die("pins-settle");
	}
	emit("%s.acquired=%llu", o->tok[1], a - pins_acq0);
	emit("%s.released=%llu", o->tok[1], r - pins_rel0);
}

static void op_uring_close(void)
{
	if (close(ring_fd))
		die("io_uring-close");
	ring_fd = -1;
}

static void op_uring_register(struct op *o)
{
	struct region *r = region(o->tok[2]);
	struct iovec iov = { r->addr + num(o->tok[3]), num(o->tok[4]) };
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
		if (prev)
			len += snprintf(out + len, sizeof(out) - len, "%c%ld", prev, run);
		if (len >= sizeof(out) - 1) {
			errno = E2BIG;
			die("pagemap-cmp-output");
		}
		prev = c;
		run = 1;
	}
	close(fd);
	emit("%s=%s", o->tok[1], out);
}

static void op_vmsplice(struct op *o)
{
	struct region *r = region(o->tok[1]);
	char *p = r->addr + num(o->tok[2]);
	long left = num(o->tok[3]);
	static struct iovec iov[1024];

	for (int i = 0; i < 1024; i++) {
		iov[i].iov_base = p;
		iov[i].iov_len = 1;
	}
	while (left > 0) {
		int pfd[2];
		long slots, room;

		/* pipes stay open until the process exits: each buffer holds one page reference */
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

static void op_odirect_read(struct op *o)
{
	struct region *r = region(o->tok[2]);
	size_t off = num(o->tok[3]), len = num(o->tok[4]);
	int fd = open("/mnt/ext4/dio", O_RDWR | O_CREAT, 0600);
	ssize_t got;

	if (fd < 0)
		die("dio-file");
	fill_file(fd, len);
	close(fd);
	fd = open("/mnt/ext4/dio", O_RDONLY | O_DIRECT);
	if (fd < 0)
		die("dio-open");
	got = pread(fd, r->addr + off, len, 0);
	if (got < 0)
		emit("%s=%s", o->tok[1], errname(errno));
	else
		emit("%s=%zd", o->tok[1], got);
	close(fd);
}

static void op_process_vm_readv(struct op *o)
{
	struct region *src = region(o->tok[2]), *dst = region(o->tok[5]);
	size_t len = num(o->tok[4]);
	struct iovec remote = { src->addr + num(o->tok[3]), len };
	struct iovec local = { dst->addr + num(o->tok[6]), len };
	ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

	if (got < 0)
		emit("%s=%s", o->tok[1], errname(errno));
	else
		emit("%s=%zd", o->tok[1], got);
}

static int run_ops(struct op *ops, int n);

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
	if (pid == 0)
		_exit(run_ops(ops + i + 1, j - i - 1));
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		errno = ECHILD;
		die("fork-child-failed");
	}
	return j + 1;
}

static int run_ops(struct op *ops, int n)
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
			read_pins(&pins_acq0, &pins_rel0);
		else if (!strcmp(t, "pins_end"))
			op_pins_end(o);
		else if (!strcmp(t, "pins_settle"))
			op_pins_settle(o);
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
		else if (!strcmp(t, "odirect_read"))
			op_odirect_read(o);
		else if (!strcmp(t, "process_vm_readv"))
			op_process_vm_readv(o);
		else {
			errno = EINVAL;
			die(t);
		}
		i++;
	}
	return 0;
}

/* ---- runner: fresh process per case, framed output ---- */

static uint32_t crc32(const char *s, size_t n)
{
	uint32_t c = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		c ^= (unsigned char)s[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & -(c & 1));
	}
	return ~c;
}

static int seq;

/* frame: "@@PINLAB <seq> <len> <crc32> <payload>@@" on a line of its own */
static void frame(const char *payload)
{
	char buf[8192];
	size_t n = strlen(payload);
	int len = snprintf(buf, sizeof(buf), "\n@@PINLAB %d %zu %08x %s@@\n", seq++, n, crc32(payload, n),
			   payload);

	if (len > 0 && write(1, buf, len) < 0)
		_exit(2);
}

/* runs case idx (variable bound to val) in a fresh process; output lines joined by spaces */
static int run_child(const char *file, int idx, const char *var, long val, char *out, size_t cap)
{
	int pfd[2], status;
	size_t len = 0;
	ssize_t got;
	pid_t pid;

	if (pipe(pfd))
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char sidx[16], sbind[48];
		char *argv[] = { "pinprobe", "case", (char *)file, sidx, var ? sbind : NULL, NULL };

		snprintf(sidx, sizeof(sidx), "%d", idx);
		snprintf(sbind, sizeof(sbind), "%s=%ld", var ? var : "", val);
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(pfd[1]);
	out[0] = 0;
	while (len < cap - 1 && (got = read(pfd[0], out + len, cap - 1 - len)) > 0)
		len += got;
	out[len] = 0;
	close(pfd[0]);
	waitpid(pid, &status, 0);
	for (size_t i = 0; i < len; i++)
		if (out[i] == '\n' || out[i] == ' ')
			out[i] = ' ';
	while (len && out[len - 1] == ' ')
		out[--len] = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_UNMET)
		return EXIT_UNMET;
	if (WIFSIGNALED(status))
		snprintf(out + len, cap - len, " status=error detail=signal-%d", WTERMSIG(status));
	return 2;
}

/* value of key in "k=v k=v" text, or NULL */
static const char *lookup(const char *text, const char *key, char *val, size_t cap)
{
	size_t kl = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL) {
		if (!strncmp(p, key, kl) && p[kl] == '=') {
			size_t n = strcspn(p + kl + 1, " ");

			snprintf(val, cap, "%.*s", (int)n, p + kl + 1);
			return val;
		}
	}
	return NULL;
}

/* 1 if the search predicate holds at v, 0 if not, -1 (out filled) on error or unmet */
static int probe_at(const char *file, int idx, long v, char *out, size_t cap)
{
	struct pcase *c = &cases[idx];
	char val[64];

	if (run_child(file, idx, c->var, v, out, cap))
		return -1;
	if (!lookup(out, c->key, val, sizeof(val))) {
		snprintf(out, cap, "status=error detail=search-key-missing-at-%ld", v);
		return -1;
	}
	return !strcmp(val, c->want);
}

static void run_search(const char *file, int idx, char *payload, size_t cap)
{
	struct pcase *c = &cases[idx];
	static char out[4096];
	long lo = c->lo, hi = c->hi;
	int at_lo, at_hi, steps = 2, n;

	n = snprintf(payload, cap, "case=%s", c->name);
	at_lo = probe_at(file, idx, lo, out, sizeof(out));
	if (at_lo < 0 || (at_hi = probe_at(file, idx, hi, out, sizeof(out))) < 0) {
		snprintf(payload + n, cap - n, " %s", out);
		return;
	}
	if (at_lo || !at_hi) {
		snprintf(payload + n, cap - n, " status=ok threshold=none at_lo=%d at_hi=%d", at_lo, at_hi);
		return;
	}
	/* invariant: predicate false at lo, true at hi */
	while (hi - lo > 1) {
		long mid = lo + (hi - lo) / 2;
		int r = probe_at(file, idx, mid, out, sizeof(out));

		steps++;
		if (r < 0) {
			snprintf(payload + n, cap - n, " %s", out);
			return;
		}
		if (r)
			hi = mid;
		else
			lo = mid;
	}
	snprintf(payload + n, cap - n, " status=ok threshold=%ld steps=%d", hi, steps);
}

static void hello(void)
{
	char payload[512], thp[128] = "", hp[64] = "";
	struct utsname u;
	FILE *f;

	uname(&u);
	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (f) {
		if (fgets(thp, sizeof(thp), f))
			thp[strcspn(thp, "\n")] = 0;
		fclose(f);
	}
	for (char *p = thp; *p; p++)
		if (*p == ' ')
			*p = ',';
	f = fopen("/proc/sys/vm/nr_hugepages", "r");
	if (f) {
		if (fgets(hp, sizeof(hp), f))
			hp[strcspn(hp, "\n")] = 0;
		fclose(f);
	}
	snprintf(payload, sizeof(payload), "hello release=%s thp=%s nr_hugepages=%s cases=%d", u.release, thp,
		 hp, ncases);
	frame(payload);
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "run")) {
		static char payload[6144], out[4096];

		parse_file(argv[2]);
		hello();
		for (int i = 0; i < ncases; i++) {
			if (cases[i].has_search) {
				run_search(argv[2], i, payload, sizeof(payload));
			} else {
				int rc = run_child(argv[2], i, NULL, 0, out, sizeof(out));

				snprintf(payload, sizeof(payload), "case=%.60s%s %.4000s", cases[i].name,
					 rc == 0 ? " status=ok" : "", out);
			}
			frame(payload);
		}
		snprintf(payload, sizeof(payload), "done cases=%d", ncases);
		frame(payload);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "say")) {
		frame(argv[2]);
		return 0;
	}
	if (argc >= 4 && !strcmp(argv[1], "case")) {
		int idx;

		parse_file(argv[2]);
		idx = atoi(argv[3]);
		if (idx < 0 || idx >= ncases) {
			errno = EINVAL;
			die("case-index");
		}
		if (argc >= 5) {
			char *eq = strchr(argv[4], '=');

			if (!eq) {
				errno = EINVAL;
				die("binding");
			}
			*eq = 0;
			bind_var = argv[4];
			bind_val = atol(eq + 1);
		}
		alarm(CASE_TIMEOUT_S);
		return run_ops(cases[idx].ops, cases[idx].nops);
	}
	fprintf(stderr, "usage: pinprobe run FILE | case FILE INDEX [VAR=VALUE] | say TEXT\n");
	return 2;
}

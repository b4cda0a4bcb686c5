/*
 * pinprobe: runs pinlab probe op lists inside the guest.
 *
 *   pinprobe run FILE             every case of FILE, each in a fresh exec'ed process in its
 *                                 own process group, results framed on stdout (the console)
 *   pinprobe case FILE INDEX [V]  one case (internal); V binds the case's search variable
 *   pinprobe say TEXT             TEXT as one frame (the init script's fatal errors)
 *   pinprobe parse FILE           validate FILE and print its number of cases
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pinprobe.h"

#define MAX_OUT 4096
#define MAX_PAYLOAD 6144
/* every pin taken by a case must be released once it has exited (its rings torn down) */
#define FENCE_TIMEOUT_S 10.0

int in_fork_child;

/* ---- output of a case: observation lines on stdout (a pipe read by the runner) ---- */

void emit(const char *fmt, ...)
{
	static const char overflow[] = "status=error\ndetail=emit-overflow\n";
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(buf) - 1) {
		if (write(1, overflow, sizeof(overflow) - 1) < 0)
			_exit(EXIT_ERROR);
		_exit(EXIT_ERROR);
	}
	buf[n++] = '\n';
	if (write(1, buf, n) != n)
		_exit(EXIT_ERROR);
}

const char *errname(int e)
{
	const char *s = e ? strerrorname_np(e) : "ok";

	return s ? s : "E?";
}

void die(const char *what)
{
	const char *e = errname(errno);

	emit("status=error");
	emit("detail=%s%s:%s", in_fork_child ? "child:" : "", what, e);
	_exit(EXIT_ERROR);
}

void unmet(const char *why)
{
	emit("status=unmet");
	emit("detail=%s%s", in_fork_child ? "child:" : "", why);
	_exit(EXIT_UNMET);
}

/* ---- framing ---- */

uint32_t crc32(const char *s, size_t n)
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

/* "@@PINLAB <seq> <len> <crc32> <payload>@@" on a line of its own */
static void frame(const char *payload)
{
	char buf[MAX_PAYLOAD + 128];
	size_t n = strlen(payload);
	int len = snprintf(buf, sizeof(buf), "\n@@PINLAB %d %zu %08x %s@@\n", seq++, n, crc32(payload, n),
			   payload);

	if (len < 0 || len >= (int)sizeof(buf))
		_exit(EXIT_ERROR);
	if (write(1, buf, len) != len)
		_exit(EXIT_ERROR);
}

/* ---- one case in a fresh process group ---- */

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(char *out, size_t cap, const char *detail, long v)
{
	snprintf(out, cap, "status=error detail=%s", detail);
	if (v >= 0)
		snprintf(out + strlen(out), cap - strlen(out), "-at-%ld", v);
}

/*
 * Runs case idx (variable bound to val) as its own process group, killed as a whole after
 * CASE_TIMEOUT_S (a fork child left running would otherwise hold the pipe open), then waits
 * until no pin is held. Output lines are joined by spaces. Returns 0, EXIT_UNMET or
 * EXIT_ERROR (out then carries status= and detail=).
 */
static int run_child(const char *file, int idx, const char *var, long val, char *out, size_t cap)
{
	int pfd[2], status, overflow = 0, timed_out = 0;
	double deadline = now() + CASE_TIMEOUT_S;
	size_t len = 0;
	pid_t pid;

	if (pipe(pfd))
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char sidx[16], sbind[MAX_WORD + 24];
		char *argv[] = { "pinprobe", "case", (char *)file, sidx, var ? sbind : NULL, NULL };

		setpgid(0, 0);
		snprintf(sidx, sizeof(sidx), "%d", idx);
		snprintf(sbind, sizeof(sbind), "%s=%ld", var ? var : "", val);
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	setpgid(pid, pid);
	close(pfd[1]);
	for (;;) {
		struct pollfd p = { pfd[0], POLLIN, 0 };
		char scratch[512];
		int left_ms = (int)((deadline - now()) * 1000), r;
		ssize_t got;

		if (left_ms <= 0) {
			timed_out = 1;
			break;
		}
		r = poll(&p, 1, left_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		if (len < cap - 1) {
			got = read(pfd[0], out + len, cap - 1 - len);
			if (got > 0)
				len += got;
		} else {
			got = read(pfd[0], scratch, sizeof(scratch));
			overflow |= got > 0;
		}
		if (got <= 0)
			break;
	}
	out[len] = 0;
	close(pfd[0]);
	kill(-pid, SIGKILL);
	waitpid(pid, &status, 0);
	for (size_t i = 0; i < len; i++)
		if (out[i] == '\n')
			out[i] = ' ';
	while (len && out[len - 1] == ' ')
		out[--len] = 0;
	if (timed_out) {
		fail(out, cap, "case-timeout", -1);
		return EXIT_ERROR;
	}
	if (overflow) {
		fail(out, cap, "case-output-overflow", -1);
		return EXIT_ERROR;
	}
	if (!pins_idle(FENCE_TIMEOUT_S)) {
		fail(out, cap, "pins-held-after-case", -1);
		return EXIT_ERROR;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_UNMET)
		return EXIT_UNMET;
	if (WIFSIGNALED(status))
		fail(out, cap, "signal", WTERMSIG(status));
	else if (!strstr(out, "status=error"))
		fail(out, cap, "exit-status", WEXITSTATUS(status));
	return EXIT_ERROR;
}

/* ---- the threshold search (evaluator.py search_threshold does the same) ---- */

/* the value of key in "k=v k=v" text into val, and every other field into rest */
static int split(const char *text, const char *key, char *val, size_t vcap, char *rest, size_t rcap)
{
	size_t kl = strlen(key), rl = 0;
	int found = 0;

	rest[0] = 0;
	for (const char *p = text; *p;) {
		size_t n = strcspn(p, " ");

		if (!strncmp(p, key, kl) && p[kl] == '=') {
			snprintf(val, vcap, "%.*s", (int)(n - kl - 1), p + kl + 1);
			found = 1;
		} else if (n) {
			int w = snprintf(rest + rl, rcap - rl, "%s%.*s", rl ? " " : "", (int)n, p);

			if (w < 0 || (size_t)w >= rcap - rl)
				return -1;
			rl += w;
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	return found;
}

/*
 * 1 if observation key is the case's yes value at v, 0 if it is its no value; -1 (out holds
 * an error) on error, unmet, any other value, or other observations that differ from those
 * at the first point evaluated (kept in rest0; *have_rest once it is set).
 */
static int probe_at(const char *file, int idx, long v, char *out, size_t cap, char *rest0,
		    int *have_rest)
{
	struct pcase *c = &cases[idx];
	char val[MAX_WORD], rest[MAX_OUT];

	if (run_child(file, idx, c->var, v, out, cap))
		return -1;
	if (split(out, c->key, val, sizeof(val), rest, sizeof(rest)) <= 0) {
		fail(out, cap, "search-key-missing", v);
		return -1;
	}
	if (!*have_rest) {
		strcpy(rest0, rest);
		*have_rest = 1;
	} else if (strcmp(rest0, rest)) {
		fail(out, cap, "search-observations-differ", v);
		return -1;
	}
	if (!strcmp(val, c->yes))
		return 1;
	if (!strcmp(val, c->no))
		return 0;
	fail(out, cap, "search-value-unexpected", v);
	return -1;
}

static void run_search(const char *file, int idx, char *payload, size_t cap)
{
	struct pcase *c = &cases[idx];
	static char out[MAX_OUT], rest[MAX_OUT];
	long lo = c->lo, hi = c->hi;
	int at_lo, at_hi = 0, steps = 2, n, have_rest = 0;

	n = snprintf(payload, cap, "case=%s", c->name);
	at_lo = probe_at(file, idx, lo, out, sizeof(out), rest, &have_rest);
	if (at_lo < 0 || (at_hi = probe_at(file, idx, hi, out, sizeof(out), rest, &have_rest)) < 0) {
		snprintf(payload + n, cap - n, " %s", out);
		return;
	}
	n += snprintf(payload + n, cap - n, " status=ok%s%s", rest[0] ? " " : "", rest);
	if (at_lo || !at_hi) {
		snprintf(payload + n, cap - n, " threshold=none at_lo=%d at_hi=%d", at_lo, at_hi);
		return;
	}
	/* invariant: predicate false at lo, true at hi */
	while (hi - lo > 1) {
		long mid = lo + (hi - lo) / 2;
		int r = probe_at(file, idx, mid, out, sizeof(out), rest, &have_rest);

		steps++;
		if (r < 0) {
			snprintf(payload, cap, "case=%s %s", c->name, out);
			return;
		}
		if (r)
			hi = mid;
		else
			lo = mid;
	}
	snprintf(payload + n, cap - n, " threshold=%ld steps=%d", hi, steps);
}

/* ---- the guest's configuration, checked against the contract by check.py ---- */

static void read_line(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");

	buf[0] = 0;
	if (f) {
		if (fgets(buf, cap, f))
			buf[strcspn(buf, "\n")] = 0;
		fclose(f);
	}
	for (char *p = buf; *p; p++)
		if (*p == ' ')
			*p = ',';
	if (!buf[0])
		snprintf(buf, cap, "?");
}

static void hello(void)
{
	char payload[512], thp[128], hp[64];
	const char *sizes = check_page_sizes();
	struct utsname u;

	uname(&u);
	read_line("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof(thp));
	read_line("/proc/sys/vm/nr_hugepages", hp, sizeof(hp));
	snprintf(payload, sizeof(payload), "hello release=%s thp=%s nr_hugepages=%s cpus=%ld page_sizes=%s cases=%d",
		 u.release, thp, hp, sysconf(_SC_NPROCESSORS_ONLN), sizes ? sizes : "ok", ncases);
	frame(payload);
}

static int run_all(const char *file)
{
	static char payload[MAX_PAYLOAD], out[MAX_OUT];

	parse_file(file);
	hello();
	if (!pins_idle(FENCE_TIMEOUT_S)) {
		frame("fatal pins-held-before-first-case");
		return 1;
	}
	for (int i = 0; i < ncases; i++) {
		if (cases[i].has_search) {
			run_search(file, i, payload, sizeof(payload));
		} else {
			int rc = run_child(file, i, NULL, 0, out, sizeof(out));

			snprintf(payload, sizeof(payload), "case=%s%s %s", cases[i].name, rc == 0 ? " status=ok" : "",
				 out);
		}
		if (strlen(payload) >= sizeof(payload) - 1)
			snprintf(payload, sizeof(payload), "case=%s status=error detail=payload-overflow",
				 cases[i].name);
		frame(payload);
	}
	snprintf(payload, sizeof(payload), "done cases=%d", ncases);
	frame(payload);
	return 0;
}

static int run_case(char **argv, int argc)
{
	const char *sizes;
	long idx;

	parse_file(argv[2]);
	idx = number(argv[3], "case-index");
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
		bind_val = number(eq + 1, "binding");
	}
	sizes = check_page_sizes();
	if (sizes) {
		errno = EINVAL;
		die(sizes);
	}
	return run_ops(cases[idx].ops, cases[idx].nops);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "run"))
		return run_all(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "say")) {
		if (strlen(argv[2]) >= MAX_PAYLOAD)
			return EXIT_ERROR;
		frame(argv[2]);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "parse")) {
		parse_file(argv[2]);
		printf("cases=%d\n", ncases);
		return 0;
	}
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "case"))
		return run_case(argv, argc);
	fprintf(stderr, "usage: pinprobe run FILE | case FILE INDEX [VAR=VALUE] | say TEXT | parse FILE\n");
	return EXIT_ERROR;
}

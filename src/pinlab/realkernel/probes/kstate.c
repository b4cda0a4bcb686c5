/* Kernel state readers: /proc/vmstat, /proc/self/pagemap, /proc/self/smaps, page sizes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pinprobe.h"

/* v6.1 fs/proc/task_mmu.c: PM_PRESENT bit 63, PM_PFRAME_BITS 55 */
#define PM_PRESENT (1ULL << 63)
#define PM_PFRAME_MASK ((1ULL << 55) - 1)

/*
 * The pin counters are node stats whose per-CPU diffs are folded into the global value only
 * every sysctl_stat_interval; a write to stat_refresh folds them now (v6.1 mm/vmstat.c
 * vmstat_refresh -> refresh_vm_stats). pgpgin/pgpgout are vm events, summed over CPUs at
 * every read (v6.1 mm/vmstat.c vmstat_start -> all_vm_events), shown in KiB: sectors / 2.
 */
void read_counters(struct counters *c)
{
	char line[256];
	FILE *f;
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY);

	if (fd < 0)
		die("stat_refresh-open");
	if (write(fd, "1\n", 2) != 2)
		die("stat_refresh-write");
	close(fd);
	f = fopen("/proc/vmstat", "r");
	if (!f)
		die("vmstat");
	c->pin_acq = c->pin_rel = c->pgpgin = c->pgpgout = ~0ULL;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "nr_foll_pin_acquired %llu", &c->pin_acq);
		sscanf(line, "nr_foll_pin_released %llu", &c->pin_rel);
		sscanf(line, "pgpgin %llu", &c->pgpgin);
		sscanf(line, "pgpgout %llu", &c->pgpgout);
	}
	fclose(f);
	if (c->pin_acq == ~0ULL || c->pin_rel == ~0ULL || c->pgpgin == ~0ULL || c->pgpgout == ~0ULL) {
		errno = ENOENT;
		die("vmstat-counters");
	}
}

/*
 * 1 once every pin in the system is released (global acquired == released), 0 if that does
 * not happen within timeout_s. A closed ring's buffers are unpinned by deferred work (v6.1
 * io_uring/io_uring.c io_ring_ctx_wait_and_kill queues io_ring_exit_work, which may wait in
 * HZ/20 steps): this is the eventual state, not a guess at how long that takes.
 */
int pins_idle(double timeout_s)
{
	struct timespec t0, t;
	struct counters c;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		read_counters(&c);
		if (c.pin_acq == c.pin_rel)
			return 1;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s)
			return 0;
		usleep(10000);
	}
}

/* the entry of addr; PFNs are shown only to CAP_SYS_ADMIN (v6.1 fs/proc/task_mmu.c
 * pagemap_read: show_pfn), otherwise present pages read as PFN 0, which must not pass */
unsigned long long pagemap_entry(int fd, const char *addr)
{
	unsigned long long e;

	if (pread(fd, &e, 8, ((unsigned long)addr / PAGE) * 8) != 8)
		die("pagemap-read");
	if ((e & PM_PRESENT) && !(e & PM_PFRAME_MASK)) {
		errno = EPERM;
		die("pagemap-pfn-hidden");
	}
	return e;
}

long smaps_field(const char *addr, const char *field)
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
			return strtol(line + flen + 1, NULL, 10);
		}
	}
	fclose(f);
	errno = ENOENT;
	die("smaps-field");
}

/* one lru_add_drain() on this CPU: MADV_POPULATE_READ ends with it (v6.1 mm/gup.c
 * faultin_vma_page_range via mm/madvise.c madvise_populate -> lru_add_drain) */
void drain(void)
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

/* NULL if PAGE and HPAGE are this kernel's base page and PMD size, else what differs */
const char *check_page_sizes(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");
	unsigned long pmd = 0;

	if ((unsigned long)sysconf(_SC_PAGESIZE) != PAGE)
		return "page-size";
	if (!f)
		return "hpage_pmd_size-missing";
	if (fscanf(f, "%lu", &pmd) != 1)
		pmd = 0;
	fclose(f);
	return pmd == HPAGE ? NULL : "hpage_pmd_size";
}

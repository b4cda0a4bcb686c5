/*
 * pinprobe: runs pinlab probe op lists inside the guest (see runner.c for the commands).
 *
 * The op list language is documented in pinlab/realkernel/ops.py; these files and the model
 * evaluator (pinlab/realkernel/model.py) implement the same semantics.
 */
#ifndef PINPROBE_H
#define PINPROBE_H

#include <stddef.h>
#include <stdint.h>

/* checked against sysconf(_SC_PAGESIZE) and hpage_pmd_size by check_page_sizes() */
#define PAGE 4096UL
#define HPAGE (2UL << 20)
#define ARENA (1UL << 30)
#define MAX_TOK 16
#define MAX_OPS 256
#define MAX_CASES 128
#define MAX_REGIONS 16
#define MAX_LINE 512
#define MAX_NAME 64
#define MAX_WORD 64
#define CASE_TIMEOUT_S 60
#define EXIT_ERROR 2
#define EXIT_UNMET 3

struct op {
	int ntok;
	char *tok[MAX_TOK];
};

/* search VAR LO HI KEY YES NO: smallest VAR in [LO, HI] where observation KEY is YES */
struct pcase {
	char name[MAX_NAME];
	int has_search;
	char var[MAX_WORD];
	long lo, hi;
	char key[MAX_WORD];
	char yes[MAX_WORD];
	char no[MAX_WORD];
	int nops;
	struct op ops[MAX_OPS];
};

struct counters {
	unsigned long long pin_acq, pin_rel, pgpgin, pgpgout;
};

extern struct pcase cases[MAX_CASES];
extern int ncases;
extern const char *bind_var;
extern long bind_val;
extern int in_fork_child;

/* runner.c: output and failure */
void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *errname(int e);
void die(const char *what) __attribute__((noreturn));
void unmet(const char *why) __attribute__((noreturn));
uint32_t crc32(const char *s, size_t n);

/* parse.c: the case file */
void parse_file(const char *path);
long num(const char *s);
long number(const char *s, const char *what);

/* kstate.c: kernel state readers */
void read_counters(struct counters *c);
int pins_idle(double timeout_s);
unsigned long long pagemap_entry(int fd, const char *addr);
long smaps_field(const char *addr, const char *field);
void drain(void);
const char *check_page_sizes(void);

/* ops.c: the op interpreter */
int run_ops(struct op *ops, int n);

#endif

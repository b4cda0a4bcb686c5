/* The case file: "case NAME", optional "search ...", one op per line, "end". */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pinprobe.h"

struct pcase cases[MAX_CASES];
int ncases;
const char *bind_var;
long bind_val;

/* token count of every op, its name included (ops.py: the name, then one per field) */
static const struct {
	const char *name;
	int ntok;
} op_arity[] = {
	{ "map", 6 },	       { "touch", 4 },		 { "madvise", 5 },	   { "mprotect", 5 },
	{ "drain", 1 },	       { "require_thp", 4 },	 { "pins_begin", 1 },	   { "pins_end", 2 },
	{ "pins_settle", 2 },  { "pgpg_end", 2 },	 { "uring_register", 5 }, { "uring_unregister", 2 },
	{ "uring_close", 1 },  { "pagemap_save", 2 },	 { "pagemap_cmp", 3 },	   { "smaps", 4 },
	{ "vmsplice", 4 },     { "dio_file", 2 },	 { "odirect_read", 5 },   { "odirect_write", 5 },
	{ "process_vm_readv", 7 }, { "fork", 1 },	 { "endfork", 1 },
};

static void bad_input(const char *what)
{
	errno = EINVAL;
	die(what);
}

long number(const char *s, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || end == s || *end)
		bad_input(what);
	return v;
}

long num(const char *s)
{
	if (s[0] == '$') {
		if (!bind_var || strcmp(s + 1, bind_var))
			bad_input("unbound-variable");
		return bind_val;
	}
	return number(s, "bad-number");
}

static void word(char *dst, const char *src, const char *what)
{
	if (!src || strlen(src) >= MAX_WORD)
		bad_input(what);
	strcpy(dst, src);
}

static int arity(const char *name)
{
	for (size_t i = 0; i < sizeof(op_arity) / sizeof(op_arity[0]); i++)
		if (!strcmp(op_arity[i].name, name))
			return op_arity[i].ntok;
	return -1;
}

void parse_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[MAX_LINE];
	struct pcase *c = NULL;

	if (!f)
		die("open-cases");
	while (fgets(line, sizeof(line), f)) {
		char *tok[MAX_TOK + 1], *save;
		int n = 0;

		if (!strchr(line, '\n') && !feof(f))
			bad_input("line-too-long");
		for (char *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
			if (n == MAX_TOK)
				bad_input("too-many-tokens");
			tok[n++] = t;
		}
		if (!n || tok[0][0] == '#')
			continue;
		if (!strcmp(tok[0], "case")) {
			if (c)
				bad_input("case-without-end");
			if (n != 2 || strlen(tok[1]) >= MAX_NAME)
				bad_input("case-name");
			if (ncases == MAX_CASES)
				bad_input("too-many-cases");
			c = &cases[ncases++];
			memset(c, 0, sizeof(*c));
			strcpy(c->name, tok[1]);
		} else if (!c) {
			bad_input("op-outside-case");
		} else if (!strcmp(tok[0], "search")) {
			if (n != 7 || c->has_search || c->nops)
				bad_input("search-line");
			c->has_search = 1;
			word(c->var, tok[1], "search-variable");
			c->lo = number(tok[2], "search-lo");
			c->hi = number(tok[3], "search-hi");
			word(c->key, tok[4], "search-key");
			word(c->yes, tok[5], "search-yes");
			word(c->no, tok[6], "search-no");
			if (c->lo >= c->hi)
				bad_input("search-range");
		} else if (!strcmp(tok[0], "end")) {
			if (n != 1)
				bad_input("end-line");
			c = NULL;
		} else {
			struct op *o;

			if (arity(tok[0]) < 0)
				bad_input("unknown-op");
			if (arity(tok[0]) != n)
				bad_input("op-token-count");
			if (c->nops == MAX_OPS)
				bad_input("too-many-ops");
			o = &c->ops[c->nops++];
			o->ntok = n;
			for (int i = 0; i < n; i++) {
				o->tok[i] = strdup(tok[i]);
				if (!o->tok[i])
					die("strdup");
			}
		}
	}
	if (ferror(f))
		die("read-cases");
	fclose(f);
	if (c)
		bad_input("case-without-end");
}

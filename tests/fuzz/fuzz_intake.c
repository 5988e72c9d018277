/*
 * fuzz_intake.c - the kit's durable journal (worker/intake.c): the file a
 * platform's previous worker left, read back at start, and the journal
 * written through the API and read back.
 *
 * Input: a byte choosing the mode, a byte of parameters (the handled-set
 * capacity, 1 to 8), then data.
 * file     data is the journal.  Invariant: a fixed point; what one open
 *          reads (cursor, pending events and outbound messages with their
 *          data, the handled ids) a second open reads again.
 * records  data is lines "T id[ data]"; the harness writes each with its
 *          CRC (a line starting with '!' gets a wrong one; a last line
 *          without newline is a torn write).  Invariant: what is read
 *          equals a model of the record semantics (I inbound unless
 *          pending or handled, H handled, O outbound, S sent, C cursor;
 *          damaged and torn lines left out), and the file is a fixed point.
 * ops      data is a sequence of operations (add, commit, done, outbound,
 *          sent, restart).  Invariant: the live state and, after each
 *          restart, the state read back equal a model: committed events
 *          kept until done, uncommitted ones forgotten, handled ids
 *          remembered up to the capacity, outbound kept until sent, the
 *          last committed cursor.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <event2/event.h>

#include "fz_util.h"
#include "intake.h"
#include "util.h"

#define NAME "fz"

static struct event_base *fz_base;
static char *fz_dir;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_setup();
	fz_dir = fz_subdir("state");
	fz_base = event_base_new();
	if (fz_base == NULL)
		abort();
	return 0;
}

/* ---- what an intake holds, as plain data --------------------------------- */

struct rec {
	char *id, *data;
	size_t len;
};

struct state {
	char *cursor;
	struct rec *in, *out;
	size_t nin, nout;
	struct fz_set handled;          /* oldest first, at most handled.cap */
};

static void
recs_free(struct rec *r, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(r[i].id);
		free(r[i].data);
	}
	free(r);
}

static void
state_free(struct state *s)
{
	free(s->cursor);
	recs_free(s->in, s->nin);
	recs_free(s->out, s->nout);
	fz_set_free(&s->handled);
	memset(s, 0, sizeof(*s));
}

static void
recs_push(struct rec **r, size_t *n, const char *id, const char *data, size_t len)
{
	*r = xrealloc(*r, (*n + 1) * sizeof(**r));
	(*r)[*n].id = xstrdup(id);
	(*r)[*n].data = xmalloc(len + 1);
	memcpy((*r)[*n].data, data, len);
	(*r)[*n].data[len] = '\0';
	(*r)[*n].len = len;
	(*n)++;
}

static ssize_t
recs_find(const struct rec *r, size_t n, const char *id)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(r[i].id, id) == 0)
			return (ssize_t)i;
	return -1;
}

static void
recs_remove(struct rec *r, size_t *n, size_t i)
{
	free(r[i].id);
	free(r[i].data);
	memmove(r + i, r + i + 1, (*n - i - 1) * sizeof(*r));
	(*n)--;
}

/* The model of one record read back (intake_apply's rules). */
static void
model_apply(struct state *s, char type, const char *id, const char *data, size_t len)
{
	ssize_t i;

	switch (type) {
	case 'I':
		if (recs_find(s->in, s->nin, id) < 0 && !fz_set_has(&s->handled, id))
			recs_push(&s->in, &s->nin, id, data, len);
		break;
	case 'H':
		if ((i = recs_find(s->in, s->nin, id)) >= 0)
			recs_remove(s->in, &s->nin, (size_t)i);
		fz_set_add(&s->handled, id);
		break;
	case 'O':
		if (recs_find(s->out, s->nout, id) < 0)
			recs_push(&s->out, &s->nout, id, data, len);
		break;
	case 'S':
		if ((i = recs_find(s->out, s->nout, id)) >= 0)
			recs_remove(s->out, &s->nout, (size_t)i);
		break;
	case 'C':
		free(s->cursor);
		s->cursor = len > 0 ? xstrndup(data, len) : NULL;
		break;
	}
}

/* ---- reading an intake's state ------------------------------------------- */

struct grab {
	struct rec **r;
	size_t *n;
};

static void
grab_cb(void *arg, const char *id, const char *data, size_t len)
{
	struct grab *g = arg;

	recs_push(g->r, g->n, id, data, len);
}

static void
grab(const struct intake *in, struct state *s, size_t cap)
{
	struct grab gi = { &s->in, &s->nin }, go = { &s->out, &s->nout };
	const char *c = intake_cursor(in);

	memset(s, 0, sizeof(*s));
	s->handled.cap = cap;
	s->cursor = c != NULL ? xstrdup(c) : NULL;
	intake_each_inbound(in, grab_cb, &gi);
	intake_each_outbound(in, grab_cb, &go);
	FZ_CHECK(intake_backlog(in) == s->nin && intake_outbox(in) == s->nout,
	    "counts %zu/%zu, lists %zu/%zu", intake_backlog(in), intake_outbox(in), s->nin,
	    s->nout);
}

static void
recs_same(const struct rec *a, size_t na, const struct rec *b, size_t nb, const char *what)
{
	size_t i;

	FZ_CHECK(na == nb, "%s: %zu records, expected %zu", what, nb, na);
	for (i = 0; i < na; i++)
		FZ_CHECK(strcmp(a[i].id, b[i].id) == 0 && a[i].len == b[i].len &&
		    memcmp(a[i].data, b[i].data, a[i].len) == 0, "%s: record %zu (%.40s / %.40s)",
		    what, i, a[i].id, b[i].id);
}

/* want against what in holds; ids are probed for the handled set. */
static void
same(const struct state *want, const struct intake *in, char **ids, size_t nids,
    const char *when)
{
	struct state got;
	size_t i;

	grab(in, &got, want->handled.cap);
	FZ_CHECK((want->cursor == NULL) == (got.cursor == NULL) &&
	    (want->cursor == NULL || strcmp(want->cursor, got.cursor) == 0),
	    "%s: cursor \"%s\", expected \"%s\"", when, got.cursor ? got.cursor : "(none)",
	    want->cursor ? want->cursor : "(none)");
	recs_same(want->in, want->nin, got.in, got.nin, "inbound");
	recs_same(want->out, want->nout, got.out, got.nout, "outbound");
	for (i = 0; i < nids; i++)
		FZ_CHECK(intake_handled(in, ids[i]) == fz_set_has(&want->handled, ids[i]),
		    "%s: \"%.40s\" handled %d, expected %d", when, ids[i],
		    intake_handled(in, ids[i]), fz_set_has(&want->handled, ids[i]));
	state_free(&got);
}

static struct intake *
open_intake(size_t cap)
{
	struct intake_opts o = { .base = fz_base, .dir = fz_dir, .name = NAME, .handled_cap = cap };
	char err[256] = "";
	struct intake *in = intake_open(&o, err, sizeof(err));

	FZ_CHECK(in != NULL, "open: %s", err);
	return in;
}

/* Every id-like token of the data (the third field of each line), to probe. */
static size_t
ids_of(char *text, char **ids, size_t max)
{
	char *save = NULL, *l;
	size_t n = 0;

	for (l = strtok_r(text, "\n", &save); l != NULL && n < max; l = strtok_r(NULL, "\n", &save)) {
		char *p = strchr(l, ' ');

		if (p != NULL && (p = strchr(p + 1, ' ')) != NULL) {
			p++;
			p[strcspn(p, " ")] = '\0';
			ids[n++] = p;
		}
	}
	return n;
}

/* ---- modes ------------------------------------------------------------------ */

/* Opens what is on disk twice: the second open must read what the first did. */
static void
check_fixed_point(size_t cap, char **ids, size_t nids, const struct state *model)
{
	struct intake *in = open_intake(cap);
	struct state first;

	if (model != NULL)
		same(model, in, ids, nids, "read back");
	grab(in, &first, cap);
	intake_free(in);
	in = open_intake(cap);
	same(&first, in, NULL, 0, "opened again");
	intake_free(in);
	state_free(&first);
}

static void
check_file(struct fz_in *in, size_t cap)
{
	size_t len, nids;
	const uint8_t *data = fz_take(in, in->n, &len);
	char *text = xstrndup((const char *)data, len), *ids[512];

	fz_clear_dir(fz_dir);
	fz_write(fz_dir, NAME ".journal", data, len, 0);
	nids = ids_of(text, ids, ARRAY_LEN(ids));
	check_fixed_point(cap, ids, nids, NULL);
	free(text);
}

static uint32_t
crc32_of(char type, const char *id, const char *data, size_t len)
{
	uint32_t crc = 0xffffffffu;
	const char *parts[3] = { &type, id, data };
	size_t lens[3] = { 1, strlen(id), len }, i, k;
	int b;

	for (i = 0; i < 3; i++)
		for (k = 0; k < lens[i]; k++) {
			crc ^= (unsigned char)parts[i][k];
			for (b = 0; b < 8; b++)
				crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
		}
	return ~crc;
}

/* 1 when the loader takes id (printable, no spaces, at most INTAKE_MAX_ID bytes). */
static int
id_ok(const char *id)
{
	size_t n = strlen(id), i;

	for (i = 0; i < n; i++)
		if ((unsigned char)id[i] <= 0x20 || id[i] == 0x7f)
			return 0;
	return n > 0 && n <= INTAKE_MAX_ID;
}

static void
check_records(struct fz_in *in, size_t cap)
{
	size_t len, off = 0, nids = 0;
	const uint8_t *data = fz_take(in, in->n, &len);
	char *text = xstrndup((const char *)data, len), *line, *save = NULL, *ids[512];
	FILE *f;
	char *file = NULL;
	size_t flen = 0;
	struct state model = { .handled.cap = cap };
	size_t tlen = strlen(text);
	int torn = tlen > 0 && text[tlen - 1] != '\n';

	f = open_memstream(&file, &flen);
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		int bad = line[0] == '!', last;
		char type, *id, *d;
		size_t dlen;

		off = (size_t)(line - text) + strlen(line);
		last = torn && off == tlen;
		line += bad;
		if (strlen(line) < 3 || line[1] != ' ')
			continue;
		type = line[0];
		id = line + 2;
		d = strchr(id, ' ');
		if (d != NULL)
			*d++ = '\0';
		dlen = d != NULL ? strlen(d) : 0;
		fprintf(f, "%c %08x %s%s%.*s%s", type, crc32_of(type, id, d, dlen) ^ (bad ? 1u : 0u),
		    id, d != NULL ? " " : "", (int)dlen, d != NULL ? d : "", last ? "" : "\n");
		if (nids < ARRAY_LEN(ids))
			ids[nids++] = id;
		if (!bad && !last && id_ok(id) && strchr("IHOSCV", type) != NULL)
			model_apply(&model, type, id, d != NULL ? d : "", dlen);
	}
	fclose(f);
	fz_trace("journal written:\n%.*s", (int)flen, file);
	fz_clear_dir(fz_dir);
	fz_write(fz_dir, NAME ".journal", file, flen, 0);
	check_fixed_point(cap, ids, nids, &model);
	state_free(&model);
	free(file);
	free(text);
}

static void
committed(void *arg, int ok)
{
	int *r = arg;

	*r = ok ? 1 : -1;
}

/* Runs operations through the API against a model of what must be durable. */
static void
check_ops(struct fz_in *in, size_t cap)
{
	struct state model = { .handled.cap = cap };
	struct rec *staged = NULL;
	size_t nstaged = 0, i, nids = 0;
	struct intake *it;
	char *ids[64], id[8], cur[16], *data;
	unsigned ncommit = 0;
	int r;

	fz_clear_dir(fz_dir);
	it = open_intake(cap);
	for (i = 0; i < 16; i++) {
		snprintf(id, sizeof(id), "e%zu", i);
		ids[nids++] = xstrdup(id);
	}
	while (in->n > 0) {
		uint8_t op = fz_u8(in), k = fz_u8(in) % 16;

		switch (op % 6) {
		case 0:
			data = fz_str(in, fz_u8(in) % 16);
			data[strcspn(data, "\n")] = '\0';
			r = intake_add(it, ids[k], data, strlen(data));
			FZ_CHECK(r == ((recs_find(model.in, model.nin, ids[k]) >= 0 ||
			    recs_find(staged, nstaged, ids[k]) >= 0 || fz_set_has(&model.handled, ids[k])) ?
			    INTAKE_DUP : INTAKE_NEW), "add %s gave %d", ids[k], r);
			if (r == INTAKE_NEW)
				recs_push(&staged, &nstaged, ids[k], data, strlen(data));
			free(data);
			break;
		case 1:
			snprintf(cur, sizeof(cur), "c%u", ncommit++);
			r = 0;
			intake_commit(it, (k & 1) ? cur : NULL, committed, &r);
			FZ_CHECK(r == 0, "the commit callback ran inside intake_commit");
			while (r == 0)
				event_base_loop(fz_base, EVLOOP_ONCE);
			FZ_CHECK(r == 1, "a commit failed");
			for (i = 0; i < nstaged; i++)
				model_apply(&model, 'I', staged[i].id, staged[i].data, staged[i].len);
			recs_free(staged, nstaged);
			staged = NULL;
			nstaged = 0;
			if (k & 1)
				model_apply(&model, 'C', "-", cur, strlen(cur));
			break;
		case 2:
			intake_done(it, ids[k]);
			if (recs_find(model.in, model.nin, ids[k]) >= 0)
				model_apply(&model, 'H', ids[k], "", 0);
			break;
		case 3:
			data = fz_str(in, fz_u8(in) % 16);
			data[strcspn(data, "\n")] = '\0';
			r = intake_out_add(it, ids[k], data, strlen(data));
			FZ_CHECK((r == 0) == (recs_find(model.out, model.nout, ids[k]) < 0),
			    "out_add %s gave %d", ids[k], r);
			model_apply(&model, 'O', ids[k], data, strlen(data));
			free(data);
			break;
		case 4:
			intake_sent(it, ids[k]);
			model_apply(&model, 'S', ids[k], "", 0);
			break;
		default:
			/* A restart: what was not committed is forgotten. */
			intake_free(it);
			recs_free(staged, nstaged);
			staged = NULL;
			nstaged = 0;
			it = open_intake(cap);
			same(&model, it, ids, nids, "after a restart");
			break;
		}
		same(&model, it, ids, nids, "live");
	}
	intake_free(it);
	it = open_intake(cap);
	same(&model, it, ids, nids, "at the end");
	intake_free(it);
	recs_free(staged, nstaged);
	state_free(&model);
	for (i = 0; i < nids; i++)
		free(ids[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in), param = fz_u8(&in);
	size_t cap = 1 + param % 8;

	switch (mode % 3) {
	case 0:
		check_file(&in, cap);
		break;
	case 1:
		check_records(&in, cap);
		break;
	default:
		check_ops(&in, cap);
		break;
	}
	return 0;
}

/* intake.c - the durable journal of one platform (see intake.h). */
#include "intake.h"

#include <sys/file.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "strmap.h"
#include "util.h"

#define INTAKE_VERSION      "1"
#define INTAKE_RETRY_MIN    (1000 * 1000ULL)
#define INTAKE_RETRY_MAX    (30 * 1000 * 1000ULL)

struct intake_rec {
	TAILQ_ENTRY(intake_rec) link;
	char *id;
	char *data;
	size_t len;
	int staged;                     /* added, not yet committed */
	int unsynced;                   /* committed, its sync not yet done */
};
TAILQ_HEAD(intake_list, intake_rec);

struct intake_waiter {
	intake_commit_fn cb;
	void *arg;
};

struct intake_buf {
	char *p;
	size_t len, cap;
};

struct intake {
	struct event_base *base;
	char *name, *path, *lock_path;
	size_t handled_cap, compact_bytes;
	uint64_t sync_delay;

	int fd, lock_fd;
	size_t file_bytes;              /* bytes in the journal file */
	size_t live_bytes;              /* bytes a snapshot would take, roughly */
	int broken;                     /* the next write is a whole snapshot */
	char *error;                    /* why writing fails, or NULL */
	uint64_t retry_usec;

	struct intake_list in, out;     /* pending inbound (staged at the tail), outbound */
	struct strmap *in_map, *out_map;
	size_t nin, nout, nstaged;

	struct strmap *handled;         /* id -> its slot in ring */
	char **ring;                    /* handled ids, oldest at ring_head */
	size_t ring_head, ring_len;

	char *cursor;                   /* committed (maybe not yet synced) */
	char *durable_cursor;           /* on disk */
	struct intake_buf stage, wbuf;  /* staged records; records awaiting write */

	struct intake_waiter *waiters;
	size_t nwaiters, waiters_cap;
	struct event *sync_ev, *retry_ev;
	int sync_armed;
	uint64_t sync_due;
};

/* ---- records -------------------------------------------------------- */

static uint32_t intake_crc_table[256];

static uint32_t
intake_crc(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *s = p;
	size_t i;
	int k;

	if (intake_crc_table[1] == 0) {
		for (i = 0; i < 256; i++) {
			uint32_t c = (uint32_t)i;

			for (k = 0; k < 8; k++)
				c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
			intake_crc_table[i] = c;
		}
	}
	crc = ~crc;
	for (i = 0; i < n; i++)
		crc = intake_crc_table[(crc ^ s[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void
intake_buf_add(struct intake_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 4096;

		while (ncap < b->len + n + 1)
			ncap *= 2;
		b->p = xrealloc(b->p, ncap);
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* Appends "<type> <crc> <id>[ <data>]\n"; returns the bytes added. */
static size_t
intake_rec_put(struct intake_buf *b, char type, const char *id, const char *data, size_t len)
{
	char head[16];
	size_t idlen = strlen(id), before = b->len;
	uint32_t crc;

	crc = intake_crc(0, &type, 1);
	crc = intake_crc(crc, id, idlen);
	if (len > 0)
		crc = intake_crc(crc, data, len);
	snprintf(head, sizeof(head), "%c %08x ", type, crc);
	intake_buf_add(b, head, 11);
	intake_buf_add(b, id, idlen);
	if (len > 0) {
		intake_buf_add(b, " ", 1);
		intake_buf_add(b, data, len);
	}
	intake_buf_add(b, "\n", 1);
	return b->len - before;
}

static int
intake_id_valid(const char *id)
{
	size_t n = 0;

	if (id == NULL)
		return 0;
	for (; id[n] != '\0'; n++)
		if ((unsigned char)id[n] <= 0x20 || id[n] == 0x7f || n >= INTAKE_MAX_ID)
			return 0;
	return n > 0;
}

static int
intake_data_valid(const char *data, size_t len)
{
	return len <= INTAKE_MAX_DATA && (len == 0 || (data != NULL && memchr(data, '\n', len) == NULL &&
	    memchr(data, '\0', len) == NULL));
}

/* ---- in-memory state -------------------------------------------------- */

static struct intake_rec *
intake_rec_new(const char *id, const char *data, size_t len)
{
	struct intake_rec *r = xcalloc(1, sizeof(*r));

	r->id = xstrdup(id);
	r->data = xmalloc(len + 1);
	if (len > 0)
		memcpy(r->data, data, len);
	r->data[len] = '\0';
	r->len = len;
	return r;
}

static void
intake_rec_free(struct intake_rec *r)
{
	free(r->id);
	free(r->data);
	free(r);
}

static void
intake_in_remove(struct intake *in, struct intake_rec *r)
{
	TAILQ_REMOVE(&in->in, r, link);
	strmap_del(in->in_map, r->id);
	in->nin--;
	in->live_bytes -= r->len + strlen(r->id) + 13;
	intake_rec_free(r);
}

/* Remembers id as handled, forgetting the oldest beyond the cap. */
static void
intake_handled_add(struct intake *in, const char *id)
{
	size_t slot;

	if (strmap_get(in->handled, id) != NULL)
		return;
	if (in->ring_len == in->handled_cap) {
		char *old = in->ring[in->ring_head];

		strmap_del(in->handled, old);
		in->live_bytes -= strlen(old) + 12;
		free(old);
		in->ring_head = (in->ring_head + 1) % in->handled_cap;
		in->ring_len--;
	}
	slot = (in->ring_head + in->ring_len) % in->handled_cap;
	in->ring[slot] = xstrdup(id);
	in->ring_len++;
	strmap_put(in->handled, id, in->ring[slot]);
	in->live_bytes += strlen(id) + 12;
}

static void
intake_set_cursor(char **dst, const char *cursor)
{
	char *c = cursor != NULL ? xstrdup(cursor) : NULL;

	free(*dst);
	*dst = c;
}

/* Applies one record read back from the journal. */
static void
intake_apply(struct intake *in, char type, const char *id, const char *data, size_t len)
{
	struct intake_rec *r;

	switch (type) {
	case 'I':
		if (strmap_get(in->in_map, id) != NULL || strmap_get(in->handled, id) != NULL)
			return;
		r = intake_rec_new(id, data, len);
		TAILQ_INSERT_TAIL(&in->in, r, link);
		strmap_put(in->in_map, id, r);
		in->nin++;
		in->live_bytes += len + strlen(id) + 13;
		return;
	case 'H':
		if ((r = strmap_get(in->in_map, id)) != NULL)
			intake_in_remove(in, r);
		intake_handled_add(in, id);
		return;
	case 'O':
		if (strmap_get(in->out_map, id) != NULL)
			return;
		r = intake_rec_new(id, data, len);
		TAILQ_INSERT_TAIL(&in->out, r, link);
		strmap_put(in->out_map, id, r);
		in->nout++;
		in->live_bytes += len + strlen(id) + 13;
		return;
	case 'S':
		if ((r = strmap_del(in->out_map, id)) != NULL) {
			TAILQ_REMOVE(&in->out, r, link);
			in->nout--;
			in->live_bytes -= r->len + strlen(r->id) + 13;
			intake_rec_free(r);
		}
		return;
	case 'C':
		intake_set_cursor(&in->cursor, len > 0 ? data : NULL);
		return;
	}
}

/* ---- the file --------------------------------------------------------- */

static void
intake_fail(struct intake *in, const char *what)
{
	char *e = xasprintf("%s %s: %s", what, in->path, strerror(errno));

	if (in->error == NULL || strcmp(in->error, e) != 0)
		log_warnx("%s: %s; nothing new is acknowledged until it can be written", in->name, e);
	free(in->error);
	in->error = e;
	in->broken = 1;
}

/* Takes the lock if not held yet.  Returns 0, or -1 (error set). */
static int
intake_lock(struct intake *in)
{
	int fd;

	if (in->lock_fd >= 0)
		return 0;
	fd = open(in->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		intake_fail(in, "cannot create");
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		intake_fail(in, "another process holds the lock of");
		return -1;
	}
	in->lock_fd = fd;
	return 0;
}

/* The whole state as a journal, written to a temporary file and renamed into place. */
static int
intake_snapshot(struct intake *in)
{
	struct intake_buf b = { 0 };
	struct intake_rec *r;
	size_t i;
	int fd, rc;

	intake_rec_put(&b, 'V', INTAKE_VERSION, NULL, 0);
	if (in->cursor != NULL)
		intake_rec_put(&b, 'C', "-", in->cursor, strlen(in->cursor));
	for (i = 0; i < in->ring_len; i++)
		intake_rec_put(&b, 'H', in->ring[(in->ring_head + i) % in->handled_cap], NULL, 0);
	TAILQ_FOREACH(r, &in->in, link)
		if (!r->staged)
			intake_rec_put(&b, 'I', r->id, r->data, r->len);
	TAILQ_FOREACH(r, &in->out, link)
		intake_rec_put(&b, 'O', r->id, r->data, r->len);
	rc = write_file_atomic(in->path, b.p, b.len, 0600);
	free(b.p);
	if (rc < 0) {
		intake_fail(in, "cannot write");
		return -1;
	}
	if (in->fd >= 0)
		close(in->fd);
	fd = open(in->path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		in->fd = -1;
		intake_fail(in, "cannot open");
		return -1;
	}
	in->fd = fd;
	in->file_bytes = b.len;
	in->broken = 0;
	return 0;
}

/* Appends the buffered records and makes them durable.  Returns 0 or -1. */
static int
intake_append(struct intake *in)
{
	ssize_t n;

	if (in->wbuf.len == 0)
		return 0;
	n = write(in->fd, in->wbuf.p, in->wbuf.len);
	if (n != (ssize_t)in->wbuf.len) {
		if (n >= 0)
			errno = ENOSPC;
		intake_fail(in, "cannot append to");
		return -1;
	}
	in->file_bytes += in->wbuf.len;
	if (fdatasync(in->fd) < 0) {
		intake_fail(in, "cannot sync");
		return -1;
	}
	return 0;
}

/* Writes everything pending: an append, or a snapshot when broken or grown. */
static int
intake_write(struct intake *in)
{
	int rc;

	if (intake_lock(in) < 0)
		return -1;
	if (in->broken || in->fd < 0 || in->file_bytes > in->live_bytes * 2 + in->compact_bytes)
		rc = intake_snapshot(in);
	else
		rc = intake_append(in);
	in->wbuf.len = 0;
	if (rc == 0 && in->error != NULL) {
		log_info("%s: %s can be written again", in->name, in->path);
		free(in->error);
		in->error = NULL;
	}
	return rc;
}

/* ---- syncing ---------------------------------------------------------- */

/* After a sync: committed records become durable, or are forgotten. */
static void
intake_settle(struct intake *in, int ok)
{
	struct intake_rec *r, *next;

	for (r = TAILQ_FIRST(&in->in); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		if (!r->unsynced)
			continue;
		if (ok)
			r->unsynced = 0;
		else
			intake_in_remove(in, r);
	}
	if (ok)
		intake_set_cursor(&in->durable_cursor, in->cursor);
	else
		intake_set_cursor(&in->cursor, in->durable_cursor);
}

static void
intake_arm_retry(struct intake *in)
{
	struct timeval tv;

	in->retry_usec = in->retry_usec == 0 ? INTAKE_RETRY_MIN :
	    (in->retry_usec * 2 > INTAKE_RETRY_MAX ? INTAKE_RETRY_MAX : in->retry_usec * 2);
	tv.tv_sec = (time_t)(in->retry_usec / 1000000);
	tv.tv_usec = (suseconds_t)(in->retry_usec % 1000000);
	event_add(in->retry_ev, &tv);
}

/* Runs one sync and answers every waiter. */
static void
intake_run_sync(struct intake *in)
{
	struct intake_waiter *w = in->waiters;
	size_t i, n = in->nwaiters;
	int ok;

	in->sync_armed = 0;
	event_del(in->sync_ev);
	ok = intake_write(in) == 0;
	intake_settle(in, ok);
	if (ok) {
		in->retry_usec = 0;
		event_del(in->retry_ev);
	} else if (!event_pending(in->retry_ev, EV_TIMEOUT, NULL))
		intake_arm_retry(in);
	in->waiters = NULL;
	in->nwaiters = in->waiters_cap = 0;
	for (i = 0; i < n; i++)
		w[i].cb(w[i].arg, ok);
	free(w);
}

static void
intake_sync_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	intake_run_sync(arg);
}

static void
intake_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct intake *in = arg;

	(void)fd;
	(void)what;
	intake_run_sync(in);
}

/* Schedules a sync within delay microseconds (sooner if one is already due). */
static void
intake_schedule(struct intake *in, uint64_t delay)
{
	uint64_t due = mono_usec() + delay;
	struct timeval tv;

	if (in->sync_armed && in->sync_due <= due)
		return;
	in->sync_armed = 1;
	in->sync_due = due;
	tv.tv_sec = (time_t)(delay / 1000000);
	tv.tv_usec = (suseconds_t)(delay % 1000000);
	event_add(in->sync_ev, &tv);
}

static void
intake_wait(struct intake *in, intake_commit_fn cb, void *arg)
{
	if (cb == NULL)
		return;
	if (in->nwaiters == in->waiters_cap) {
		in->waiters_cap = in->waiters_cap ? in->waiters_cap * 2 : 8;
		in->waiters = xrealloc(in->waiters, in->waiters_cap * sizeof(*in->waiters));
	}
	in->waiters[in->nwaiters].cb = cb;
	in->waiters[in->nwaiters].arg = arg;
	in->nwaiters++;
}

/* ---- loading ---------------------------------------------------------- */

/* Parses one line (without its newline).  Returns 0, or -1 when damaged. */
static int
intake_parse(struct intake *in, char *line, size_t len)
{
	char *id, *data, *sp;
	size_t dlen = 0;
	uint32_t crc, want;
	char type;

	if (len < 12 || line[1] != ' ' || line[10] != ' ')
		return -1;
	type = line[0];
	line[len] = '\0';
	line[10] = '\0';
	if (sscanf(line + 2, "%8x", &want) != 1)
		return -1;
	id = line + 11;
	sp = memchr(id, ' ', len - 11);
	if (sp != NULL) {
		*sp = '\0';
		data = sp + 1;
		dlen = len - (size_t)(data - line);
	} else
		data = line + len;
	crc = intake_crc(0, &type, 1);
	crc = intake_crc(crc, id, strlen(id));
	if (dlen > 0)
		crc = intake_crc(crc, data, dlen);
	if (crc != want || !intake_id_valid(id) || strchr("IHOSCV", type) == NULL)
		return -1;
	intake_apply(in, type, id, data, dlen);
	return 0;
}

/* Keeps a damaged journal aside, so nothing in it is destroyed. */
static void
intake_keep_aside(struct intake *in, size_t bad)
{
	char *aside = xasprintf("%s.damaged.%lld", in->path, (long long)time(NULL));

	if (rename(in->path, aside) == 0)
		log_warnx("%s: %s had %zu damaged record(s); kept as %s, the rest recovered",
		    in->name, in->path, bad, aside);
	else
		log_warn("%s: %s had %zu damaged record(s); cannot keep it aside", in->name,
		    in->path, bad);
	free(aside);
}

/* Reads the journal an earlier worker left; returns 1 when it must be rewritten. */
static int
intake_load(struct intake *in)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0, bad = 0, torn = 0;
	ssize_t n;
	int fd;

	fd = open(in->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno != ENOENT)
			intake_fail(in, "cannot read");
		return 1;
	}
	f = fdopen(fd, "r");
	if (f == NULL)
		fatal("%s: fdopen", __func__);
	while ((n = getline(&line, &cap, f)) > 0) {
		in->file_bytes += (size_t)n;
		if (line[n - 1] != '\n') {
			torn++;         /* the last write of a killed worker */
			break;
		}
		if ((size_t)n > INTAKE_MAX_DATA + INTAKE_MAX_ID + 16 ||
		    intake_parse(in, line, (size_t)n - 1) < 0)
			bad++;
	}
	free(line);
	fclose(f);
	if (bad > 0)
		intake_keep_aside(in, bad);
	else if (torn > 0)
		log_info("%s: the last record of %s was cut; dropped", in->name, in->path);
	if (in->nin > 0 || in->nout > 0)
		log_info("%s: %zu event(s) and %zu outbound message(s) left by the previous worker",
		    in->name, in->nin, in->nout);
	return bad > 0 || torn > 0 || in->file_bytes > in->live_bytes * 2 + in->compact_bytes;
}

/* ---- the interface ---------------------------------------------------- */

struct intake *
intake_open(const struct intake_opts *o, char *err, size_t errlen)
{
	struct intake *in = xcalloc(1, sizeof(*in));

	in->base = o->base;
	in->name = xstrdup(o->name);
	in->path = xasprintf("%s/%s.journal", o->dir, o->name);
	in->lock_path = xasprintf("%s/%s.lock", o->dir, o->name);
	in->handled_cap = o->handled_cap ? o->handled_cap : 8192;
	in->sync_delay = o->sync_delay_usec ? o->sync_delay_usec : 2000;
	in->compact_bytes = o->compact_bytes ? o->compact_bytes : (4u << 20);
	in->fd = in->lock_fd = -1;
	TAILQ_INIT(&in->in);
	TAILQ_INIT(&in->out);
	in->in_map = strmap_new();
	in->out_map = strmap_new();
	in->handled = strmap_new();
	in->ring = xcalloc(in->handled_cap, sizeof(*in->ring));
	in->sync_ev = evtimer_new(o->base, intake_sync_cb, in);
	in->retry_ev = evtimer_new(o->base, intake_retry_cb, in);
	if (in->sync_ev == NULL || in->retry_ev == NULL)
		fatalx("%s: out of memory", __func__);
	if (intake_lock(in) < 0 && errno == EWOULDBLOCK) {
		snprintf(err, errlen, "%s", in->error);
		intake_free(in);
		return NULL;
	}
	/* Without the lock (a read-only directory) the journal is still read. */
	if (intake_load(in))
		in->broken = 1;
	intake_set_cursor(&in->durable_cursor, in->cursor);
	if (in->lock_fd < 0 || intake_write(in) < 0)
		intake_arm_retry(in);
	return in;
}

void
intake_free(struct intake *in)
{
	struct intake_rec *r;

	if (in == NULL)
		return;
	if (in->nwaiters > 0 || in->wbuf.len > 0 || in->broken)
		intake_run_sync(in);
	while ((r = TAILQ_FIRST(&in->in)) != NULL)
		intake_in_remove(in, r);
	while ((r = TAILQ_FIRST(&in->out)) != NULL) {
		TAILQ_REMOVE(&in->out, r, link);
		intake_rec_free(r);
	}
	strmap_free(in->in_map, NULL);
	strmap_free(in->out_map, NULL);
	strmap_free(in->handled, NULL);
	while (in->ring_len > 0) {
		free(in->ring[in->ring_head]);
		in->ring_head = (in->ring_head + 1) % in->handled_cap;
		in->ring_len--;
	}
	free(in->ring);
	if (in->sync_ev != NULL)
		event_free(in->sync_ev);
	if (in->retry_ev != NULL)
		event_free(in->retry_ev);
	if (in->fd >= 0)
		close(in->fd);
	if (in->lock_fd >= 0)
		close(in->lock_fd);
	free(in->stage.p);
	free(in->wbuf.p);
	free(in->cursor);
	free(in->durable_cursor);
	free(in->error);
	free(in->name);
	free(in->path);
	free(in->lock_path);
	free(in);
}

const char *
intake_cursor(const struct intake *in)
{
	return in->durable_cursor;
}

static void
intake_each(const struct intake_list *l, intake_each_fn fn, void *arg)
{
	const struct intake_rec *r;

	TAILQ_FOREACH(r, l, link)
		if (!r->staged && !r->unsynced)
			fn(arg, r->id, r->data, r->len);
}

void
intake_each_inbound(const struct intake *in, intake_each_fn fn, void *arg)
{
	intake_each(&in->in, fn, arg);
}

void
intake_each_outbound(const struct intake *in, intake_each_fn fn, void *arg)
{
	intake_each(&in->out, fn, arg);
}

enum intake_add
intake_add(struct intake *in, const char *id, const char *data, size_t len)
{
	struct intake_rec *r;

	if (!intake_id_valid(id) || !intake_data_valid(data, len))
		return INTAKE_INVALID;
	if (strmap_get(in->in_map, id) != NULL || strmap_get(in->handled, id) != NULL)
		return INTAKE_DUP;
	r = intake_rec_new(id, data, len);
	r->staged = 1;
	TAILQ_INSERT_TAIL(&in->in, r, link);
	strmap_put(in->in_map, id, r);
	in->nin++;
	in->nstaged++;
	in->live_bytes += len + strlen(id) + 13;
	intake_rec_put(&in->stage, 'I', id, data, len);
	return INTAKE_NEW;
}

void
intake_commit(struct intake *in, const char *cursor, intake_commit_fn cb, void *arg)
{
	struct intake_rec *r;

	TAILQ_FOREACH_REVERSE(r, &in->in, intake_list, link) {
		if (!r->staged)
			break;
		r->staged = 0;
		r->unsynced = 1;
	}
	in->nstaged = 0;
	intake_buf_add(&in->wbuf, in->stage.p != NULL ? in->stage.p : "", in->stage.len);
	in->stage.len = 0;
	if (cursor != NULL) {
		intake_rec_put(&in->wbuf, 'C', "-", cursor, strlen(cursor));
		intake_set_cursor(&in->cursor, cursor);
	}
	intake_wait(in, cb, arg);
	intake_schedule(in, 0);
}

void
intake_sync(struct intake *in, intake_commit_fn cb, void *arg)
{
	intake_wait(in, cb, arg);
	intake_schedule(in, 0);
}

void
intake_done(struct intake *in, const char *id)
{
	struct intake_rec *r = strmap_get(in->in_map, id);

	if (r == NULL || r->staged)
		return;
	intake_in_remove(in, r);
	intake_handled_add(in, id);
	intake_rec_put(&in->wbuf, 'H', id, NULL, 0);
	intake_schedule(in, in->sync_delay);
}

int
intake_handled(const struct intake *in, const char *id)
{
	return strmap_get(in->handled, id) != NULL;
}

int
intake_out_add(struct intake *in, const char *key, const char *data, size_t len)
{
	if (!intake_id_valid(key) || !intake_data_valid(data, len) ||
	    strmap_get(in->out_map, key) != NULL)
		return -1;
	intake_apply(in, 'O', key, data, len);
	intake_rec_put(&in->wbuf, 'O', key, data, len);
	intake_schedule(in, in->sync_delay);
	return 0;
}

void
intake_sent(struct intake *in, const char *key)
{
	if (strmap_get(in->out_map, key) == NULL)
		return;
	intake_apply(in, 'S', key, NULL, 0);
	intake_rec_put(&in->wbuf, 'S', key, NULL, 0);
	intake_schedule(in, in->sync_delay);
}

size_t
intake_backlog(const struct intake *in)
{
	return in->nin - in->nstaged;
}

size_t
intake_outbox(const struct intake *in)
{
	return in->nout;
}

const char *
intake_error(const struct intake *in)
{
	return in->error;
}

/*
 * fuzz_console_state.c - the console's state files read back at start
 * (worker/platforms/console.c): console.outbox.json, console.inbox.json,
 * console.journal and console.seq, driven through console_ops (start
 * loads and replays them, stop writes them); the hub is fz_hub.c's
 * stand-in.
 *
 * Input: a byte of flags (the hub holds or finishes the replayed messages;
 * an interrupted start), then the four files separated by "\n%%\n".
 * Invariants: the replayed messages have valid ids (1 to 128 bytes of
 * UTF-8 without control characters) and distinct numeric message ids;
 * after the stop the journal is empty and the files are a fixed point: a
 * second start replays the same messages (those the hub did not finish)
 * and its stop writes the same bytes again.  With an interrupted start
 * (stopped before the replay ran), nothing is lost: the next start
 * replays exactly what an uninterrupted one did.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fz_hub.h"
#include "fz_plat.h"
#include "fz_util.h"
#include "platforms/console.h"
#include "util.h"

static const char *const fz_files[] = {
	"console.outbox.json", "console.inbox.json", "console.journal", "console.seq",
};

static struct event_base *fz_base;
static int fz_listen_fd;
static char *fz_state;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in addr;

	(void)argc;
	(void)argv;
	fz_base = fz_plat_init(&fz_state);
	fz_listen_fd = fz_listen_loopback(&addr);
	return 0;
}

/* What one start and stop did: the messages replayed, the files left. */
struct round {
	size_t n;
	char **line;                    /* "id|chat|user|name|text" of each message */
	time_t *time;
	char *file[3];                  /* outbox, inbox, seq after the stop */
};

static void
round_free(struct round *r)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		free(r->line[i]);
	free(r->line);
	free(r->time);
	for (i = 0; i < 3; i++)
		free(r->file[i]);
	memset(r, 0, sizeof(*r));
}

/* Records and checks what the hub was handed. */
static void
round_messages(struct round *r)
{
	size_t i, j;
	uint64_t id;

	r->n = fz_hub_count();
	r->line = xcalloc(r->n + 1, sizeof(char *));
	r->time = xcalloc(r->n + 1, sizeof(time_t));
	for (i = 0; i < r->n; i++) {
		const struct fz_hub_msg *m = fz_hub_get(i);

		FZ_CHECK(fz_console_ident_ok(m->chat_id) && fz_console_ident_ok(m->user_id) &&
		    (m->user_name == NULL || fz_console_ident_ok(m->user_name)),
		    "replayed message %s has a bad id", m->message_id);
		FZ_CHECK(parse_u64(m->message_id, UINT64_MAX, &id) == 0 && id > 0,
		    "message id \"%s\"", m->message_id);
		for (j = 0; j < i; j++)
			FZ_CHECK(strcmp(fz_hub_get(j)->message_id, m->message_id) != 0,
			    "message %s replayed twice", m->message_id);
		r->line[i] = xasprintf("%s|%s|%s|%s|%s", m->message_id, m->chat_id, m->user_id,
		    m->user_name != NULL ? m->user_name : "(none)", m->text);
		r->time[i] = m->time;
	}
}

/* One start and stop on the files in the state dir; early: stopped before the replay runs. */
static void
round_run(struct round *r, enum fz_hub_mode mode, int early)
{
	struct fz_hub_conf hc = { .base = fz_base, .mode = mode, .ops = &console_ops };
	void *self = fz_console_up(&hc, fz_state, fz_listen_fd, NULL);
	char *journal;
	size_t i;

	if (!early) {
		/* The replay is an active event: one turn runs it, then what the hub queued. */
		event_base_loop(fz_base, EVLOOP_NONBLOCK);
		while (fz_hub_pending())
			event_base_loop(fz_base, EVLOOP_NONBLOCK);
	}
	fz_platform_down(fz_base, &console_ops, self);
	round_messages(r);
	FZ_CHECK(!early || r->n == 0, "an interrupted start handed messages over");
	journal = fz_read(fz_state, "console.journal", NULL);
	FZ_CHECK(journal != NULL && journal[0] == '\0', "the journal is not empty after a stop");
	free(journal);
	for (i = 0; i < 3; i++) {
		r->file[i] = fz_read(fz_state, fz_files[i == 2 ? 3 : i], NULL);
		FZ_CHECK(r->file[i] != NULL, "%s missing after a stop", fz_files[i == 2 ? 3 : i]);
	}
	fz_hub_end();
}

static void
same_messages(const struct round *a, const struct round *b, int times, const char *what)
{
	size_t i;

	FZ_CHECK(a->n == b->n, "%s: %zu messages, then %zu", what, a->n, b->n);
	for (i = 0; i < a->n; i++) {
		FZ_CHECK(strcmp(a->line[i], b->line[i]) == 0, "%s: message %zu: %.80s / %.80s", what,
		    i, a->line[i], b->line[i]);
		FZ_CHECK(!times || a->time[i] == b->time[i], "%s: message %zu time %lld / %lld",
		    what, i, (long long)a->time[i], (long long)b->time[i]);
	}
}

static void
same_files(const struct round *a, const struct round *b)
{
	size_t i;

	for (i = 0; i < 3; i++)
		FZ_CHECK(strcmp(a->file[i], b->file[i]) == 0, "%s changed on a second start:\n%.300s\n"
		    "then\n%.300s", fz_files[i == 2 ? 3 : i], a->file[i], b->file[i]);
}

static void
write_files(const uint8_t *const *part, const size_t *len)
{
	size_t i;

	fz_clear_dir(fz_state);
	for (i = 0; i < ARRAY_LEN(fz_files); i++)
		if (len[i] > 0)
			fz_write(fz_state, fz_files[i], part[i], len[i], 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t flags = fz_u8(&in);
	enum fz_hub_mode mode = flags & 1 ? FZ_HUB_LATER : FZ_HUB_HOLD;
	const uint8_t *part[4];
	size_t len[4];
	struct round first, second, late;

	fz_split(&in, part, len, 4);
	write_files(part, len);
	round_run(&first, mode, 0);
	round_run(&second, FZ_HUB_HOLD, 0);
	fz_trace("%zu message(s) replayed, then %zu", first.n, second.n);
	if (mode == FZ_HUB_HOLD)
		same_messages(&first, &second, 1, "replayed again");
	else
		FZ_CHECK(second.n == 0, "%zu finished message(s) replayed again", second.n);
	same_files(&first, &second);
	if (flags & 2) {
		write_files(part, len);
		round_free(&second);
		round_run(&second, mode, 1);
		round_run(&late, mode, 0);
		same_messages(&first, &late, 0, "after an interrupted start");
		round_free(&late);
	}
	round_free(&first);
	round_free(&second);
	return 0;
}

/* test_outq.c - the outbound queue: order, limits, retries, variants, persistence, drain. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "intake.h"
#include "outq.h"
#include "util.h"
#include "unit_util.h"

#define MAXREC 256

/* A fake platform: records every attempt; answers by policy or by hand. */
struct fx {
	struct event_base *base;
	struct outq *q;
	struct outq_limits lim;
	int nsent;
	struct {
		char key[64], chat[64], text[128], reply[32];
		unsigned variant, attempt;
		uint64_t at;
	} sent[MAXREC];
	struct outq_attempt *open[MAXREC];
	int nopen;
	enum outq_result answer;        /* answered at once unless manual */
	int manual;
	int fail_first;                 /* answer TRANSIENT this many times first */
	int done_calls, done_ok;
	int health_calls;
	char health[128];
};

static void
fx_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct fx *f = plat;
	int i = f->nsent++;

	ck_assert_int_lt(i, MAXREC);
	snprintf(f->sent[i].key, sizeof(f->sent[i].key), "%s", p->key);
	snprintf(f->sent[i].chat, sizeof(f->sent[i].chat), "%s", p->chat_id);
	snprintf(f->sent[i].text, sizeof(f->sent[i].text), "%s", p->text);
	snprintf(f->sent[i].reply, sizeof(f->sent[i].reply), "%s", p->reply_to ? p->reply_to : "-");
	f->sent[i].variant = p->variant;
	f->sent[i].attempt = p->attempt;
	f->sent[i].at = mono_usec();
	if (f->manual) {
		f->open[f->nopen++] = a;
		return;
	}
	if (f->fail_first > 0) {
		f->fail_first--;
		outq_result(a, OUTQ_TRANSIENT, 0, "503 Service Unavailable");
		return;
	}
	outq_result(a, f->answer, 0, "refused");
}

static void
fx_health(void *plat, const char *why)
{
	struct fx *f = plat;

	f->health_calls++;
	snprintf(f->health, sizeof(f->health), "%s", why ? why : "");
}

static void
fx_done(void *arg, int ok)
{
	struct fx *f = arg;

	f->done_calls++;
	f->done_ok += ok;
}

static void
fx_init_with(struct fx *f, const struct outq_limits *lim, struct intake *journal)
{
	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	f->lim = *lim;
	f->q = outq_new(f->base, "t", lim, journal, fx_send, fx_health, f);
}

static void
fx_init(struct fx *f, const struct outq_limits *lim)
{
	fx_init_with(f, lim, NULL);
}

/* Frees the queue, then answers what it left out (a platform answers every attempt). */
static void
fx_fini(struct fx *f)
{
	int i;

	outq_free(f->q);
	for (i = 0; i < f->nopen; i++)
		outq_result(f->open[i], OUTQ_OK, 0, NULL);
	f->nopen = 0;
	event_base_free(f->base);
}

/* Runs the loop until cond or 10 s. */
#define RUN_UNTIL(f, cond) do {                                                 \
	uint64_t end_ = mono_usec() + 10000000;                                 \
	while (!(cond) && mono_usec() < end_)                                   \
		event_base_loop((f)->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) == 0 ?  \
		    (void)usleep(200) : (void)0;                                \
	ck_assert_msg((cond), "timed out waiting for " #cond);                  \
} while (0)

static void
fx_run(struct fx *f, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

/* Answers the oldest open attempt. */
static void
fx_answer(struct fx *f, enum outq_result r)
{
	struct outq_attempt *a;

	ck_assert_int_gt(f->nopen, 0);
	a = f->open[0];
	memmove(f->open, f->open + 1, (size_t)(--f->nopen) * sizeof(f->open[0]));
	outq_result(a, r, 0, "x");
}

static const struct outq_limits fast = { .max_text = 16, .chat_rate = 1000, .chat_burst = 1000,
	.global_rate = 1000, .global_burst = 1000, .retry_min_usec = 10000, .retry_max_usec = 20000 };

START_TEST(test_split_fifo_one_in_flight)
{
	struct fx f;

	fx_init(&f, &fast);
	f.manual = 1;
	ck_assert_int_eq(outq_push(f.q, "c1", NULL, "m9", "aaaa bbbb cccc dddd eeee ffff", "k1",
	    fx_done, &f), 2);
	ck_assert_int_eq(f.nsent, 0);           /* from the loop, not inside push */
	RUN_UNTIL(&f, f.nsent == 1);
	fx_run(&f, 30);
	ck_assert_int_eq(f.nsent, 1);           /* one in flight per chat */
	ck_assert_str_eq(f.sent[0].key, "k1.0");
	ck_assert_str_eq(f.sent[0].reply, "m9");
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.nsent == 2);
	ck_assert_str_eq(f.sent[1].key, "k1.1");
	ck_assert_str_eq(f.sent[1].reply, "-");  /* reply_to on the first piece only */
	ck_assert_int_eq(f.done_calls, 0);
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.done_calls == 1);
	ck_assert_int_eq(f.done_ok, 1);
	ck_assert_uint_eq(outq_depth(f.q), 0);
	fx_fini(&f);
}
END_TEST

START_TEST(test_chats_in_parallel_capped)
{
	struct outq_limits lim = fast;
	struct fx f;
	char chat[16], key[16];
	int i;

	lim.inflight = 4;
	fx_init(&f, &lim);
	f.manual = 1;
	for (i = 0; i < 20; i++) {
		snprintf(chat, sizeof(chat), "c%d", i);
		snprintf(key, sizeof(key), "k%d", i);
		ck_assert_int_eq(outq_push(f.q, chat, NULL, NULL, "hi", key, fx_done, &f), 1);
	}
	RUN_UNTIL(&f, f.nsent == 4);
	fx_run(&f, 30);
	ck_assert_int_eq(f.nsent, 4);
	ck_assert_uint_eq(outq_inflight(f.q), 4);
	while (f.done_calls < 20) {
		if (f.nopen > 0)
			fx_answer(&f, OUTQ_OK);
		event_base_loop(f.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		ck_assert_uint_le(outq_inflight(f.q), 4);
	}
	ck_assert_int_eq(f.nsent, 20);
	fx_fini(&f);
}
END_TEST

START_TEST(test_chat_rate)
{
	struct outq_limits lim = fast;
	struct fx f;
	char key[16];
	int i;

	lim.chat_rate = 10;
	lim.chat_burst = 1;
	fx_init(&f, &lim);
	f.answer = OUTQ_OK;
	for (i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		outq_push(f.q, "c1", NULL, NULL, "hi", key, fx_done, &f);
	}
	outq_push(f.q, "c2", NULL, NULL, "other chat", "o1", fx_done, &f);
	RUN_UNTIL(&f, f.done_calls == 6);
	/* 5 pieces at 10/s with a burst of 1: at least 4 gaps of 100 ms */
	ck_assert_uint_ge(f.sent[f.nsent - 1].at - f.sent[0].at, 390000);
	for (i = 0; i < f.nsent; i++)       /* the other chat was not held behind c1 */
		if (strcmp(f.sent[i].chat, "c2") == 0)
			ck_assert_int_le(i, 2);
	fx_fini(&f);
}
END_TEST

START_TEST(test_transient_retried_health_reported)
{
	struct fx f;

	fx_init(&f, &fast);
	f.answer = OUTQ_OK;
	f.fail_first = 3;
	outq_push(f.q, "c1", NULL, NULL, "hello", "k1", fx_done, &f);
	RUN_UNTIL(&f, f.health_calls >= 1);
	ck_assert_str_eq(f.health, "sending fails: 503 Service Unavailable");
	RUN_UNTIL(&f, f.done_calls == 1);
	ck_assert_int_eq(f.done_ok, 1);
	ck_assert_int_eq(f.nsent, 4);
	ck_assert_uint_eq(f.sent[3].attempt, 3);
	ck_assert_str_eq(f.sent[3].key, "k1.0");   /* the same key on every retry */
	ck_assert_str_eq(f.health, "");             /* healthy again */
	ck_assert_ptr_null(outq_error(f.q));
	ck_assert_int_eq(f.health_calls, 2);        /* one change each way, not per attempt */
	fx_fini(&f);
}
END_TEST

START_TEST(test_give_up)
{
	struct outq_limits lim = fast;
	struct fx f;
	uint64_t t0 = mono_usec();

	lim.give_up_usec = 200000;
	fx_init(&f, &lim);
	f.answer = OUTQ_TRANSIENT;
	outq_push(f.q, "c1", NULL, NULL, "hello", "k1", fx_done, &f);
	outq_push(f.q, "c1", NULL, NULL, "next", "k2", fx_done, &f);
	RUN_UNTIL(&f, f.done_calls == 2);
	ck_assert_int_eq(f.done_ok, 0);
	ck_assert_uint_ge(mono_usec() - t0, 200000);
	ck_assert_int_ge(f.nsent, 4);
	ck_assert_uint_eq(outq_depth(f.q), 0);
	fx_fini(&f);
}
END_TEST

START_TEST(test_rejected_dropped_next_goes)
{
	struct fx f;

	fx_init(&f, &fast);
	f.manual = 1;
	outq_push(f.q, "c1", NULL, NULL, "one", "k1", fx_done, &f);
	outq_push(f.q, "c1", NULL, NULL, "two", "k2", fx_done, &f);
	RUN_UNTIL(&f, f.nsent == 1);
	fx_answer(&f, OUTQ_REJECTED);
	RUN_UNTIL(&f, f.nsent == 2);
	ck_assert_str_eq(f.sent[1].text, "two");
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.done_calls == 2);
	ck_assert_int_eq(f.done_ok, 1);
	fx_fini(&f);
}
END_TEST

START_TEST(test_variant_then_rejected)
{
	struct outq_limits lim = fast;
	struct fx f;

	lim.variants = 2;
	fx_init(&f, &lim);
	f.manual = 1;
	outq_push(f.q, "c1", NULL, NULL, "*md*", "k1", fx_done, &f);
	RUN_UNTIL(&f, f.nsent == 1);
	ck_assert_uint_eq(f.sent[0].variant, 0);
	fx_answer(&f, OUTQ_VARIANT);
	RUN_UNTIL(&f, f.nsent == 2);
	ck_assert_uint_eq(f.sent[1].variant, 1);
	fx_answer(&f, OUTQ_VARIANT);            /* no third form: dropped */
	RUN_UNTIL(&f, f.done_calls == 1);
	ck_assert_int_eq(f.done_ok, 0);
	ck_assert_int_eq(f.nsent, 2);
	fx_fini(&f);
}
END_TEST

START_TEST(test_retry_after_pauses_chat_only)
{
	struct fx f;
	struct outq_attempt *a;
	uint64_t t0;

	fx_init(&f, &fast);
	f.manual = 1;
	outq_push(f.q, "c1", NULL, NULL, "one", "k1", fx_done, &f);
	RUN_UNTIL(&f, f.nsent == 1);
	a = f.open[0];
	f.nopen = 0;
	t0 = mono_usec();
	outq_result(a, OUTQ_RETRY_AFTER, 0.3, "429");
	outq_push(f.q, "c2", NULL, NULL, "two", "k2", fx_done, &f);
	RUN_UNTIL(&f, f.nsent == 2);
	ck_assert_str_eq(f.sent[1].chat, "c2");
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.nsent == 3);
	ck_assert_str_eq(f.sent[2].chat, "c1");
	ck_assert_uint_ge(f.sent[2].at - t0, 290000);
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.done_calls == 2);
	/* a global pause holds every chat */
	outq_pause(f.q, 0.2);
	t0 = mono_usec();
	outq_push(f.q, "c3", NULL, NULL, "three", "k3", fx_done, &f);
	RUN_UNTIL(&f, f.nsent == 4);
	ck_assert_uint_ge(f.sent[3].at - t0, 190000);
	fx_fini(&f);
}
END_TEST

/* A restart during an outage: the next worker sends what is left, with the same keys. */
START_TEST(test_persisted_across_restart)
{
	char *dir = tmpdir_new(), err[128];
	struct event_base *jb = event_base_new();
	struct intake_opts o = { .base = jb, .dir = dir, .name = "p" };
	struct intake *in = intake_open(&o, err, sizeof(err));
	struct fx f;
	int i;

	ck_assert_ptr_nonnull(in);
	fx_init_with(&f, &fast, in);
	f.manual = 1;
	ck_assert_int_eq(outq_push(f.q, "c1", "t7", "m1", "aaaa bbbb cccc dddd eeee ffff gggg",
	    "k1", fx_done, &f), 3);
	RUN_UNTIL(&f, f.nsent == 1);
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.nsent == 2);            /* piece 1 in flight when the worker goes */
	fx_fini(&f);
	intake_free(in);                        /* the journal reaches the disk */

	in = intake_open(&o, err, sizeof(err));
	ck_assert_ptr_nonnull(in);
	ck_assert_uint_eq(intake_outbox(in), 2);
	fx_init_with(&f, &fast, in);
	f.answer = OUTQ_OK;
	ck_assert_uint_eq(outq_restore(f.q), 2);
	RUN_UNTIL(&f, outq_depth(f.q) == 0);
	ck_assert_int_eq(f.nsent, 2);
	ck_assert_str_eq(f.sent[0].key, "k1.1");
	ck_assert_str_eq(f.sent[1].key, "k1.2");
	ck_assert_str_eq(f.sent[0].chat, "c1");
	for (i = 0; i < 50; i++)
		event_base_loop(jb, EVLOOP_NONBLOCK);
	fx_fini(&f);
	intake_free(in);
	in = intake_open(&o, err, sizeof(err));
	ck_assert_uint_eq(intake_outbox(in), 0);
	intake_free(in);
	event_base_free(jb);
	tmpdir_free(dir);
}
END_TEST

static int drained;

static void
on_drained(void *arg)
{
	(void)arg;
	drained++;
}

START_TEST(test_drain_deadline)
{
	struct fx f;
	uint64_t t0 = mono_usec();

	fx_init(&f, &fast);
	f.manual = 1;
	drained = 0;
	outq_push(f.q, "c1", NULL, NULL, "stuck", "k1", fx_done, &f);
	RUN_UNTIL(&f, f.nsent == 1);
	outq_drain(f.q, mono_usec() + 150000, on_drained, NULL);
	RUN_UNTIL(&f, drained == 1);
	ck_assert_uint_ge(mono_usec() - t0, 140000);
	ck_assert_uint_eq(outq_depth(f.q), 1);
	/* the queue goes while the attempt is out: a late answer is harmless */
	outq_free(f.q);
	f.q = NULL;
	fx_answer(&f, OUTQ_OK);
	event_base_free(f.base);
}
END_TEST

START_TEST(test_drain_when_empty)
{
	struct fx f;

	fx_init(&f, &fast);
	f.answer = OUTQ_OK;
	drained = 0;
	outq_push(f.q, "c1", NULL, NULL, "hi", "k1", fx_done, &f);
	outq_drain(f.q, mono_usec() + 5000000, on_drained, NULL);
	RUN_UNTIL(&f, drained == 1);
	ck_assert_int_eq(f.done_calls, 1);
	fx_fini(&f);
}
END_TEST

START_TEST(test_bad_push)
{
	struct fx f;

	fx_init(&f, &fast);
	f.manual = 1;
	ck_assert_int_eq(outq_push(f.q, "c1", NULL, NULL, "hi", "k 1", NULL, NULL), -1);
	ck_assert_int_eq(outq_push(f.q, "c1", NULL, NULL, "hi", "", NULL, NULL), -1);
	ck_assert_int_eq(outq_push(f.q, NULL, NULL, NULL, "hi", "k", NULL, NULL), -1);
	ck_assert_int_eq(outq_push(f.q, "c1", NULL, NULL, "hi", "k", NULL, NULL), 1);
	ck_assert_int_eq(outq_push(f.q, "c1", NULL, NULL, "again", "k", NULL, NULL), -1);
	ck_assert_int_eq(outq_push(f.q, "c1", NULL, NULL, "   ", "e", NULL, NULL), 1);
	RUN_UNTIL(&f, f.nsent == 1);
	fx_answer(&f, OUTQ_OK);
	RUN_UNTIL(&f, f.nsent == 2);
	ck_assert_str_eq(f.sent[1].text, "(empty reply)");
	fx_answer(&f, OUTQ_OK);
	fx_fini(&f);
}
END_TEST

static Suite *
outq_suite(void)
{
	Suite *s = suite_create("outq");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_split_fifo_one_in_flight);
	tcase_add_test(tc, test_chats_in_parallel_capped);
	tcase_add_test(tc, test_chat_rate);
	tcase_add_test(tc, test_transient_retried_health_reported);
	tcase_add_test(tc, test_give_up);
	tcase_add_test(tc, test_rejected_dropped_next_goes);
	tcase_add_test(tc, test_variant_then_rejected);
	tcase_add_test(tc, test_retry_after_pauses_chat_only);
	tcase_add_test(tc, test_persisted_across_restart);
	tcase_add_test(tc, test_drain_deadline);
	tcase_add_test(tc, test_drain_when_empty);
	tcase_add_test(tc, test_bad_push);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(outq_suite)

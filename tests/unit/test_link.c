/* test_link.c - the connection life cycle: backoff bounds, floor, retry-after, reports. */
#include <check.h>
#include <string.h>

#include <event2/event.h>

#include "link.h"
#include "util.h"
#include "unit_util.h"

struct fx {
	struct event_base *base;
	struct link *l;
	int connects;
	uint64_t at[64];
	int reports;
	enum link_state last;
	char detail[256];
	int up_then_drop;               /* the server accepts and drops at once */
};

static void
fx_connect(void *arg)
{
	struct fx *f = arg;

	if (f->connects < 64)
		f->at[f->connects] = mono_usec();
	f->connects++;
	if (f->up_then_drop) {
		link_up(f->l);
		link_fail(f->l, LINK_TRANSIENT, 0, "closed by the server");
	}
}

static void
fx_report(void *arg, enum link_state st, const char *detail)
{
	struct fx *f = arg;

	f->reports++;
	f->last = st;
	snprintf(f->detail, sizeof(f->detail), "%s", detail);
}

static void
fx_init(struct fx *f, const struct link_opts *o)
{
	memset(f, 0, sizeof(*f));
	f->base = event_base_new();
	f->l = link_new(f->base, "t", o, fx_connect, fx_report, f);
}

static void
fx_fini(struct fx *f)
{
	link_free(f->l);
	event_base_free(f->base);
}

/* Runs the loop for ms milliseconds. */
static void
fx_run(struct fx *f, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

/* Runs until n connects happened (bounded by 10 s). */
static void
fx_until(struct fx *f, int n)
{
	uint64_t end = mono_usec() + 10000000;

	while (f->connects < n && mono_usec() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	ck_assert_int_ge(f->connects, n);
}

START_TEST(test_backoff_bounds)
{
	struct link_opts o = { .backoff_min_usec = 1000, .backoff_max_usec = 64000 };
	uint64_t prev = 0, d;
	unsigned a;

	for (a = 0; a < 40; a++) {
		d = link_backoff(&o, a, 0);
		ck_assert_uint_ge(d, prev);
		ck_assert_uint_le(d, 64000);
		ck_assert_uint_ge(link_backoff(&o, a, 0.999), d / 2);
		ck_assert_uint_le(link_backoff(&o, a, 0.999), d);
		prev = d;
	}
	ck_assert_uint_eq(link_backoff(&o, 0, 0), 1000);
	ck_assert_uint_eq(link_backoff(&o, 3, 0), 8000);
	ck_assert_uint_eq(link_backoff(&o, 39, 0), 64000);
	o = (struct link_opts){ 0 };
	ck_assert_uint_eq(link_backoff(&o, 0, 0), 1000000);
	ck_assert_uint_eq(link_backoff(&o, 30, 0), 60000000);
}
END_TEST

START_TEST(test_start_connects_from_loop)
{
	struct fx f;

	fx_init(&f, NULL);
	link_start(f.l);
	ck_assert_int_eq(f.connects, 0);
	ck_assert_int_eq(link_state(f.l), LINK_CONNECTING);
	fx_until(&f, 1);
	link_up(f.l);
	ck_assert_int_eq(link_state(f.l), LINK_UP);
	ck_assert_int_eq(f.last, LINK_UP);
	fx_fini(&f);
}
END_TEST

/* A server that accepts and drops at once: attempts no closer than the floor. */
START_TEST(test_floor_prevents_hot_loop)
{
	struct link_opts o = { .backoff_min_usec = 1000, .backoff_max_usec = 2000,
		.floor_usec = 100000, .stable_usec = 1 };
	struct fx f;
	int i;

	fx_init(&f, &o);
	f.up_then_drop = 1;
	link_start(f.l);
	fx_run(&f, 700);
	ck_assert_int_ge(f.connects, 2);
	ck_assert_int_le(f.connects, 8);        /* 700 ms / 100 ms floor, +1 */
	for (i = 1; i < f.connects && i < 64; i++)
		ck_assert_uint_ge(f.at[i] - f.at[i - 1], 95000);
	fx_fini(&f);
}
END_TEST

START_TEST(test_retry_after_wins)
{
	struct link_opts o = { .backoff_min_usec = 1000, .floor_usec = 1000 };
	struct fx f;
	uint64_t t0;

	fx_init(&f, &o);
	link_start(f.l);
	fx_until(&f, 1);
	t0 = mono_usec();
	link_fail(f.l, LINK_RETRY_AFTER, 0.3, "429: retry after 0.3 s");
	ck_assert_int_eq(link_state(f.l), LINK_BACKOFF);
	ck_assert_str_eq(link_detail(f.l), "429: retry after 0.3 s");
	fx_until(&f, 2);
	ck_assert_uint_ge(mono_usec() - t0, 290000);
	fx_fini(&f);
}
END_TEST

START_TEST(test_unauthorized_slow)
{
	struct link_opts o = { .backoff_min_usec = 1000, .floor_usec = 1000,
		.unauthorized_usec = 400000 };
	struct fx f;

	fx_init(&f, &o);
	link_start(f.l);
	fx_until(&f, 1);
	link_fail(f.l, LINK_UNAUTHORIZED_FAIL, 0, "401 Unauthorized");
	ck_assert_int_eq(link_state(f.l), LINK_UNAUTHORIZED);
	fx_run(&f, 250);
	ck_assert_int_eq(f.connects, 1);
	fx_until(&f, 2);
	/* retrying keeps the reason visible */
	ck_assert_int_eq(link_state(f.l), LINK_UNAUTHORIZED);
	fx_fini(&f);
}
END_TEST

/* The same failure again is not reported again; a new one is. */
START_TEST(test_reports_deduplicated)
{
	struct link_opts o = { .backoff_min_usec = 1000, .floor_usec = 1000 };
	struct fx f;
	int n;

	fx_init(&f, &o);
	link_start(f.l);
	fx_until(&f, 1);
	link_fail(f.l, LINK_TRANSIENT, 0, "timeout");
	n = f.reports;
	fx_until(&f, 2);
	link_fail(f.l, LINK_TRANSIENT, 0, "timeout");
	ck_assert_int_eq(f.reports, n);
	fx_until(&f, 3);
	link_fail(f.l, LINK_TRANSIENT, 0, "503");
	ck_assert_int_eq(f.reports, n + 1);
	ck_assert_str_eq(f.detail, "503");
	ck_assert_uint_eq(link_failures(f.l), 3);
	fx_fini(&f);
}
END_TEST

/* Backoff grows while failing and starts over after a stable connection. */
START_TEST(test_backoff_grows_and_resets)
{
	struct link_opts o = { .backoff_min_usec = 20000, .backoff_max_usec = 10000000,
		.floor_usec = 1000, .stable_usec = 50000 };
	struct fx f;
	uint64_t t0, gap;
	int i;

	fx_init(&f, &o);
	link_start(f.l);
	fx_until(&f, 1);
	for (i = 0; i < 4; i++) {
		link_fail(f.l, LINK_TRANSIENT, 0, "refused");
		fx_until(&f, i + 2);
	}
	/* the 5th attempt waits at least min * 2^4 / 2 */
	t0 = mono_usec();
	link_fail(f.l, LINK_TRANSIENT, 0, "refused");
	fx_until(&f, 6);
	gap = mono_usec() - t0;
	ck_assert_uint_ge(gap, 20000 * 16 / 2 - 5000);
	link_up(f.l);
	fx_run(&f, 80);                 /* stable */
	t0 = mono_usec();
	link_fail(f.l, LINK_TRANSIENT, 0, "reset");
	fx_until(&f, 7);
	ck_assert_uint_lt(mono_usec() - t0, gap);
	fx_fini(&f);
}
END_TEST

START_TEST(test_stop_cancels)
{
	struct link_opts o = { .backoff_min_usec = 50000, .floor_usec = 1000 };
	struct fx f;

	fx_init(&f, &o);
	link_start(f.l);
	fx_until(&f, 1);
	link_fail(f.l, LINK_TRANSIENT, 0, "refused");
	link_stop(f.l);
	ck_assert_int_eq(link_state(f.l), LINK_STOPPING);
	fx_run(&f, 200);
	ck_assert_int_eq(f.connects, 1);
	link_fail(f.l, LINK_TRANSIENT, 0, "late");      /* ignored while stopping */
	ck_assert_int_eq(link_state(f.l), LINK_STOPPING);
	link_stopped(f.l);
	ck_assert_int_eq(link_state(f.l), LINK_STOPPED);
	ck_assert_str_eq(link_state_name(LINK_UNAUTHORIZED), "unauthorized");
	fx_fini(&f);
}
END_TEST

START_TEST(test_fatal_stays_down)
{
	struct link_opts o = { .backoff_min_usec = 1000, .floor_usec = 1000 };
	struct fx f;

	fx_init(&f, &o);
	link_start(f.l);
	fx_until(&f, 1);
	link_fail(f.l, LINK_FATAL, 0, "the Message Content intent is not enabled");
	ck_assert_int_eq(link_state(f.l), LINK_STOPPED);
	ck_assert_str_eq(link_detail(f.l), "the Message Content intent is not enabled");
	fx_run(&f, 100);
	ck_assert_int_eq(f.connects, 1);
	fx_fini(&f);
}
END_TEST

static Suite *
link_suite(void)
{
	Suite *s = suite_create("link");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_backoff_bounds);
	tcase_add_test(tc, test_start_connects_from_loop);
	tcase_add_test(tc, test_floor_prevents_hot_loop);
	tcase_add_test(tc, test_retry_after_wins);
	tcase_add_test(tc, test_unauthorized_slow);
	tcase_add_test(tc, test_reports_deduplicated);
	tcase_add_test(tc, test_backoff_grows_and_resets);
	tcase_add_test(tc, test_stop_cancels);
	tcase_add_test(tc, test_fatal_stays_down);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(link_suite)

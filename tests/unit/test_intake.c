/* test_intake.c - the kit's durable journal: commit, replay, dedup, damage, failures. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "intake.h"
#include "strmap.h"
#include "util.h"
#include "unit_util.h"

struct fx {
	struct event_base *base;
	char *dir;
	struct intake *in;
};

struct result {
	int calls, ok;
};

static void
on_commit(void *arg, int ok)
{
	struct result *r = arg;

	r->calls++;
	r->ok = ok;
}

/* Collects replayed records as "id=data;" */
struct seen {
	char buf[65536];
	int n;
};

static void
on_each(void *arg, const char *id, const char *data, size_t len)
{
	struct seen *s = arg;
	size_t used = strlen(s->buf);

	snprintf(s->buf + used, sizeof(s->buf) - used, "%s=%.*s;", id, (int)len, data);
	s->n++;
}

static struct intake *
fx_open(struct fx *f, size_t handled_cap)
{
	struct intake_opts o = { .base = f->base, .dir = f->dir, .name = "p",
		.handled_cap = handled_cap, .sync_delay_usec = 1000 };
	char err[256] = "";
	struct intake *in = intake_open(&o, err, sizeof(err));

	ck_assert_msg(in != NULL, "%s", err);
	return in;
}

static void
fx_init(struct fx *f)
{
	f->base = event_base_new();
	ck_assert_ptr_nonnull(f->base);
	f->dir = tmpdir_new();
	f->in = fx_open(f, 0);
}

static void
fx_fini(struct fx *f)
{
	intake_free(f->in);
	event_base_free(f->base);
	tmpdir_free(f->dir);
}

/* Reopens the journal as the next worker would. */
static void
fx_reopen(struct fx *f)
{
	intake_free(f->in);
	f->in = fx_open(f, 0);
}

/* Runs the loop until r has been answered (bounded). */
static void
fx_wait(struct fx *f, struct result *r)
{
	int i;

	for (i = 0; i < 1000 && r->calls == 0; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	ck_assert_int_eq(r->calls, 1);
}

/* Lets pending timers (done marks) run. */
static void
fx_settle(struct fx *f)
{
	struct result r = { 0 };

	intake_sync(f->in, on_commit, &r);
	fx_wait(f, &r);
}

static char *
fx_path(struct fx *f, const char *name)
{
	return xasprintf("%s/%s", f->dir, name);
}

static void
add_commit(struct fx *f, const char *id, const char *data, const char *cursor, int want_ok)
{
	struct result r = { 0 };

	ck_assert_int_eq(intake_add(f->in, id, data, strlen(data)), INTAKE_NEW);
	intake_commit(f->in, cursor, on_commit, &r);
	ck_assert_int_eq(r.calls, 0);   /* never from inside the call */
	fx_wait(f, &r);
	ck_assert_int_eq(r.ok, want_ok);
}

START_TEST(test_commit_replay)
{
	struct fx f;
	struct seen s = { "", 0 };

	fx_init(&f);
	ck_assert_ptr_null(intake_cursor(f.in));
	add_commit(&f, "m1", "{\"text\":\"one\"}", "c1", 1);
	add_commit(&f, "m2", "two words", "c2", 1);
	ck_assert_str_eq(intake_cursor(f.in), "c2");
	ck_assert_uint_eq(intake_backlog(f.in), 2);
	fx_reopen(&f);
	ck_assert_str_eq(intake_cursor(f.in), "c2");
	intake_each_inbound(f.in, on_each, &s);
	ck_assert_str_eq(s.buf, "m1={\"text\":\"one\"};m2=two words;");
	fx_fini(&f);
}
END_TEST

START_TEST(test_done_and_dedup)
{
	struct fx f;
	struct seen s = { "", 0 };

	fx_init(&f);
	add_commit(&f, "m1", "a", NULL, 1);
	add_commit(&f, "m2", "b", NULL, 1);
	ck_assert_int_eq(intake_add(f.in, "m1", "a", 1), INTAKE_DUP);   /* pending */
	intake_done(f.in, "m1");
	ck_assert_int_eq(intake_handled(f.in, "m1"), 1);
	ck_assert_int_eq(intake_add(f.in, "m1", "a", 1), INTAKE_DUP);   /* handled */
	fx_settle(&f);
	fx_reopen(&f);
	intake_each_inbound(f.in, on_each, &s);
	ck_assert_str_eq(s.buf, "m2=b;");
	ck_assert_int_eq(intake_handled(f.in, "m1"), 1);
	ck_assert_int_eq(intake_add(f.in, "m1", "a", 1), INTAKE_DUP);
	/* a staged id is a duplicate too, before its commit */
	ck_assert_int_eq(intake_add(f.in, "m3", "c", 1), INTAKE_NEW);
	ck_assert_int_eq(intake_add(f.in, "m3", "c", 1), INTAKE_DUP);
	fx_fini(&f);
}
END_TEST

START_TEST(test_invalid)
{
	struct fx f;

	fx_init(&f);
	ck_assert_int_eq(intake_add(f.in, "", "x", 1), INTAKE_INVALID);
	ck_assert_int_eq(intake_add(f.in, "a b", "x", 1), INTAKE_INVALID);
	ck_assert_int_eq(intake_add(f.in, "a\n", "x", 1), INTAKE_INVALID);
	ck_assert_int_eq(intake_add(f.in, "a", "x\ny", 3), INTAKE_INVALID);
	ck_assert_int_eq(intake_add(f.in, "a", "x\0y", 3), INTAKE_INVALID);
	ck_assert_int_eq(intake_add(f.in, NULL, "x", 1), INTAKE_INVALID);
	ck_assert_int_eq(intake_out_add(f.in, "k k", "x", 1), -1);
	ck_assert_uint_eq(intake_backlog(f.in), 0);
	fx_fini(&f);
}
END_TEST

START_TEST(test_outbound)
{
	struct fx f;
	struct seen s = { "", 0 };

	fx_init(&f);
	ck_assert_int_eq(intake_out_add(f.in, "o1", "reply one", 9), 0);
	ck_assert_int_eq(intake_out_add(f.in, "o2", "reply two", 9), 0);
	ck_assert_int_eq(intake_out_add(f.in, "o2", "again", 5), -1);
	intake_sent(f.in, "o1");
	fx_settle(&f);
	fx_reopen(&f);
	ck_assert_uint_eq(intake_outbox(f.in), 1);
	intake_each_outbound(f.in, on_each, &s);
	ck_assert_str_eq(s.buf, "o2=reply two;");
	fx_fini(&f);
}
END_TEST

START_TEST(test_handled_cap)
{
	struct fx f;
	char id[16];
	int i;

	fx_init(&f);
	intake_free(f.in);
	f.in = fx_open(&f, 4);
	for (i = 0; i < 6; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		add_commit(&f, id, "x", NULL, 1);
		intake_done(f.in, id);
	}
	ck_assert_int_eq(intake_handled(f.in, "m0"), 0);
	ck_assert_int_eq(intake_handled(f.in, "m1"), 0);
	ck_assert_int_eq(intake_handled(f.in, "m2"), 1);
	ck_assert_int_eq(intake_handled(f.in, "m5"), 1);
	fx_settle(&f);
	intake_free(f.in);
	f.in = fx_open(&f, 4);
	ck_assert_int_eq(intake_handled(f.in, "m1"), 0);
	ck_assert_int_eq(intake_handled(f.in, "m2"), 1);
	ck_assert_int_eq(intake_handled(f.in, "m5"), 1);
	fx_fini(&f);
}
END_TEST

/* Group commit: every commit of one loop turn answered by the same sync. */
START_TEST(test_group_commit)
{
	struct fx f;
	struct result r[50];
	char id[16];
	int i;

	fx_init(&f);
	memset(r, 0, sizeof(r));
	for (i = 0; i < 50; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		ck_assert_int_eq(intake_add(f.in, id, "x", 1), INTAKE_NEW);
		intake_commit(f.in, NULL, on_commit, &r[i]);
	}
	event_base_loop(f.base, EVLOOP_ONCE);
	for (i = 0; i < 50; i++)
		ck_assert_int_eq(r[i].calls, 1);
	ck_assert_uint_eq(intake_backlog(f.in), 50);
	fx_fini(&f);
}
END_TEST

/* The journal cut at every byte: whatever survives is a prefix of what was committed. */
START_TEST(test_cut_anywhere)
{
	struct fx f;
	char *path, *copy, *text;
	size_t len, cut;
	struct stat st;

	fx_init(&f);
	add_commit(&f, "m1", "first", "c1", 1);
	add_commit(&f, "m2", "second", "c2", 1);
	intake_done(f.in, "m1");
	ck_assert_int_eq(intake_out_add(f.in, "o1", "out", 3), 0);
	fx_settle(&f);
	add_commit(&f, "m3", "third", "c3", 1);
	path = fx_path(&f, "p.journal");
	copy = fx_path(&f, "full");
	text = read_file(path, 1 << 20, &len);
	ck_assert_ptr_nonnull(text);
	intake_free(f.in);
	f.in = NULL;
	for (cut = 0; cut <= len; cut++) {
		struct seen s = { "", 0 };
		char *aside;
		FILE *fp = fopen(path, "w");

		ck_assert_ptr_nonnull(fp);
		ck_assert_uint_eq(fwrite(text, 1, cut, fp), cut);
		fclose(fp);
		f.in = fx_open(&f, 0);
		intake_each_inbound(f.in, on_each, &s);
		/* m1 handled never comes back once its mark survived; m3 only after m2 */
		if (intake_handled(f.in, "m1"))
			ck_assert_ptr_null(strstr(s.buf, "m1="));
		if (strstr(s.buf, "m3=") != NULL)
			ck_assert_ptr_nonnull(strstr(s.buf, "m2=second;m3=third;"));
		if (cut == len) {
			ck_assert_str_eq(s.buf, "m2=second;m3=third;");
			ck_assert_str_eq(intake_cursor(f.in), "c3");
			ck_assert_uint_eq(intake_outbox(f.in), 1);
		}
		intake_free(f.in);
		f.in = NULL;
		/* a cut is a torn tail, never damage kept aside */
		aside = xasprintf("%s.damaged.%lld", path, (long long)time(NULL));
		ck_assert_int_ne(stat(aside, &st), 0);
		free(aside);
	}
	free(text);
	free(path);
	free(copy);
	f.in = fx_open(&f, 0);
	fx_fini(&f);
}
END_TEST

/* A damaged record in the middle: the rest is recovered, the file kept aside. */
START_TEST(test_damage_kept_aside)
{
	struct fx f;
	struct seen s = { "", 0 };
	char *path, *text, *p, cmd[600];
	size_t len;

	fx_init(&f);
	add_commit(&f, "m1", "first", NULL, 1);
	add_commit(&f, "m2", "second", NULL, 1);
	add_commit(&f, "m3", "third", NULL, 1);
	intake_free(f.in);
	path = fx_path(&f, "p.journal");
	text = read_file(path, 1 << 20, &len);
	ck_assert_ptr_nonnull(text);
	p = strstr(text, "second");
	ck_assert_ptr_nonnull(p);
	p[0] = 'S';                     /* the CRC no longer matches */
	ck_assert_int_eq(write_file_atomic(path, text, len, 0600), 0);
	f.in = fx_open(&f, 0);
	intake_each_inbound(f.in, on_each, &s);
	ck_assert_str_eq(s.buf, "m1=first;m3=third;");
	snprintf(cmd, sizeof(cmd), "ls %s/p.journal.damaged.* >/dev/null 2>&1", f.dir);
	ck_assert_int_eq(system(cmd), 0);
	free(text);
	free(path);
	fx_fini(&f);
}
END_TEST

START_TEST(test_garbage_file)
{
	struct fx f;

	f.base = event_base_new();
	f.dir = tmpdir_new();
	file_put(f.dir, "p.journal", "not a journal\n\x01\x02\nI zzzzzzzz m1 x\n", 0600);
	f.in = fx_open(&f, 0);
	ck_assert_uint_eq(intake_backlog(f.in), 0);
	add_commit(&f, "m1", "x", NULL, 1);
	fx_reopen(&f);
	ck_assert_uint_eq(intake_backlog(f.in), 1);
	fx_fini(&f);
}
END_TEST

START_TEST(test_lock)
{
	struct fx f;
	struct intake_opts o;
	char err[256] = "";

	fx_init(&f);
	o = (struct intake_opts){ .base = f.base, .dir = f.dir, .name = "p" };
	ck_assert_ptr_null(intake_open(&o, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "lock"));
	fx_fini(&f);
}
END_TEST

/* Writes fail (a file size limit stands in for a full disk): nothing is committed,
 * the batch is forgotten, and the journal heals when writes work again. */
START_TEST(test_write_failure_and_recovery)
{
	struct fx f;
	struct rlimit rl;
	struct result r = { 0 };
	struct seen s = { "", 0 };
	char big[8192];
	struct stat st;
	char *path;

	signal(SIGXFSZ, SIG_IGN);
	fx_init(&f);
	add_commit(&f, "m1", "kept", "c1", 1);
	path = fx_path(&f, "p.journal");
	ck_assert_int_eq(stat(path, &st), 0);
	getrlimit(RLIMIT_FSIZE, &rl);
	rl.rlim_cur = (rlim_t)st.st_size;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(intake_add(f.in, "m2", big, strlen(big)), INTAKE_NEW);
	intake_commit(f.in, "c2", on_commit, &r);
	fx_wait(&f, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_ptr_nonnull(intake_error(f.in));
	ck_assert_uint_eq(intake_backlog(f.in), 1);      /* m2 forgotten */
	ck_assert_str_eq(intake_cursor(f.in), "c1");     /* cursor not advanced */
	ck_assert_int_eq(intake_add(f.in, "m2", "small", 5), INTAKE_NEW); /* not a dup */
	intake_commit(f.in, NULL, NULL, NULL);
	intake_done(f.in, "m1");                         /* kept in memory while broken */

	rl.rlim_cur = RLIM_INFINITY;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	/* the retry timer (1 s) heals it */
	while (intake_error(f.in) != NULL)
		event_base_loop(f.base, EVLOOP_ONCE);
	fx_reopen(&f);
	intake_each_inbound(f.in, on_each, &s);
	ck_assert_int_eq(intake_handled(f.in, "m1"), 1);
	ck_assert_ptr_null(strstr(s.buf, "m1="));
	ck_assert_str_eq(intake_cursor(f.in), "c1");
	free(path);
	fx_fini(&f);
}
END_TEST

/* A directory that cannot be written: the journal is read, the intake starts broken. */
START_TEST(test_unwritable_dir)
{
	struct fx f;
	struct intake_opts o;
	char err[256] = "", *sub;
	struct result r = { 0 };

	fx_init(&f);
	add_commit(&f, "m1", "kept", NULL, 1);
	intake_free(f.in);
	f.in = NULL;
	sub = fx_path(&f, "p.journal");
	/* the state dir becomes a path through a regular file: nothing can be created */
	o = (struct intake_opts){ .base = f.base, .dir = sub, .name = "p" };
	f.in = intake_open(&o, err, sizeof(err));
	ck_assert_ptr_nonnull(f.in);
	ck_assert_ptr_nonnull(intake_error(f.in));
	ck_assert_int_eq(intake_add(f.in, "m2", "x", 1), INTAKE_NEW);
	intake_commit(f.in, NULL, on_commit, &r);
	fx_wait(&f, &r);
	ck_assert_int_eq(r.ok, 0);
	intake_free(f.in);
	f.in = fx_open(&f, 0);
	ck_assert_uint_eq(intake_backlog(f.in), 1);
	free(sub);
	fx_fini(&f);
}
END_TEST

/* Many handled events: the file is compacted and stays small. */
START_TEST(test_compaction_bounds_file)
{
	struct fx f;
	struct intake_opts o;
	char err[64], id[32], data[200];
	struct stat st;
	char *path;
	int i;

	f.base = event_base_new();
	f.dir = tmpdir_new();
	o = (struct intake_opts){ .base = f.base, .dir = f.dir, .name = "p", .handled_cap = 100,
		.compact_bytes = 16384 };
	f.in = intake_open(&o, err, sizeof(err));
	memset(data, 'd', sizeof(data) - 1);
	data[sizeof(data) - 1] = '\0';
	for (i = 0; i < 3000; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		add_commit(&f, id, data, id, 1);
		intake_done(f.in, id);
	}
	fx_settle(&f);
	path = fx_path(&f, "p.journal");
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_lt(st.st_size, 64 * 1024);
	intake_free(f.in);
	f.in = intake_open(&o, err, sizeof(err));
	ck_assert_uint_eq(intake_backlog(f.in), 0);
	ck_assert_str_eq(intake_cursor(f.in), "m2999");
	ck_assert_int_eq(intake_handled(f.in, "m2999"), 1);
	free(path);
	fx_fini(&f);
}
END_TEST

/* Loading is linear: 40,000 pending events replay quickly. */
START_TEST(test_big_replay)
{
	struct fx f;
	char id[32];
	int i;
	uint64_t t0;

	fx_init(&f);
	for (i = 0; i < 40000; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		ck_assert_int_eq(intake_add(f.in, id, "{\"text\":\"hello\"}", 16), INTAKE_NEW);
	}
	{
		struct result r = { 0 };

		intake_commit(f.in, NULL, on_commit, &r);
		fx_wait(&f, &r);
	}
	intake_free(f.in);
	t0 = mono_usec();
	f.in = fx_open(&f, 0);
	ck_assert_uint_eq(intake_backlog(f.in), 40000);
	/* quadratic loading took seconds at this size; linear takes milliseconds */
	ck_assert_uint_lt(mono_usec() - t0, 3 * 1000000ULL);
	fx_fini(&f);
}
END_TEST

START_TEST(test_strmap)
{
	struct strmap *m = strmap_new();
	char key[32];
	int i;

	for (i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		ck_assert_ptr_null(strmap_put(m, key, (void *)(long)(i + 1)));
	}
	for (i = 0; i < 10000; i += 2) {
		snprintf(key, sizeof(key), "k%d", i);
		ck_assert_ptr_eq(strmap_del(m, key), (void *)(long)(i + 1));
	}
	ck_assert_uint_eq(strmap_count(m), 5000);
	for (i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		if (i % 2)
			ck_assert_ptr_eq(strmap_get(m, key), (void *)(long)(i + 1));
		else
			ck_assert_ptr_null(strmap_get(m, key));
	}
	ck_assert_ptr_eq(strmap_put(m, "k1", (void *)7L), (void *)2L);
	ck_assert_ptr_eq(strmap_get(m, "k1"), (void *)7L);
	strmap_free(m, NULL);
}
END_TEST

static Suite *
intake_suite(void)
{
	Suite *s = suite_create("intake");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_commit_replay);
	tcase_add_test(tc, test_done_and_dedup);
	tcase_add_test(tc, test_invalid);
	tcase_add_test(tc, test_outbound);
	tcase_add_test(tc, test_handled_cap);
	tcase_add_test(tc, test_group_commit);
	tcase_add_test(tc, test_cut_anywhere);
	tcase_add_test(tc, test_damage_kept_aside);
	tcase_add_test(tc, test_garbage_file);
	tcase_add_test(tc, test_lock);
	tcase_add_test(tc, test_write_failure_and_recovery);
	tcase_add_test(tc, test_unwritable_dir);
	tcase_add_test(tc, test_compaction_bounds_file);
	tcase_add_test(tc, test_big_replay);
	tcase_add_test(tc, test_strmap);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(intake_suite)

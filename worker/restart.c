/* restart.c - the restart marker file and re-exec in place. */
#include "restart.h"
#include "log.h"
#include "util.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MARKER_NAME "restart.json"
#define MARKER_MAX (16 * 1024)
#define MARKER_NUM_MAX (1ULL << 53)     /* doubles hold integers exactly up to here */

static void
read_boot_id(char *dst, size_t dstsz)
{
	char *s = read_file("/proc/sys/kernel/random/boot_id", 128, NULL);
	size_t n;

	dst[0] = '\0';
	if (s == NULL)
		return;
	n = strcspn(s, "\n");
	s[n] = '\0';
	snprintf(dst, dstsz, "%s", s);
	free(s);
}

void
restart_marker_stamp(struct restart_marker *m)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	m->wall_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	m->mono_us = mono_usec();
	read_boot_id(m->boot_id, sizeof(m->boot_id));
}

static cJSON *
add_str(cJSON *o, const char *k, const char *v)
{
	cJSON *r = v != NULL ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k);

	if (r == NULL)
		fatalx("out of memory");
	return r;
}

int
restart_marker_write(const char *state_dir, const struct restart_marker *m)
{
	cJSON *o = cJSON_CreateObject();
	char *path, *text;
	int r, saved;

	if (o == NULL)
		fatalx("out of memory");
	add_str(o, "platform", m->platform);
	add_str(o, "chat_id", m->chat_id);
	add_str(o, "thread_id", m->thread_id);
	add_str(o, "message_id", m->message_id);
	if (cJSON_AddNumberToObject(o, "wall_ms", (double)m->wall_ms) == NULL ||
	    cJSON_AddNumberToObject(o, "mono_us", (double)m->mono_us) == NULL ||
	    cJSON_AddNumberToObject(o, "generation", (double)m->generation) == NULL)
		fatalx("out of memory");
	add_str(o, "boot_id", m->boot_id);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (text == NULL)
		fatalx("out of memory");
	path = xasprintf("%s/" MARKER_NAME, state_dir);
	r = write_file_atomic(path, text, strlen(text), 0600);
	saved = errno;
	free(path);
	free(text);
	errno = saved;
	return r;
}

/* Records the first member found wrong, for the message. */
static void
bad_key(const char **bad, const char *k)
{
	if (*bad == NULL)
		*bad = k;
}

/* A string member, or NULL; *bad set when present with another type. */
static char *
get_str(const cJSON *o, const char *k, const char **bad)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	if (it == NULL || cJSON_IsNull(it))
		return NULL;
	if (!cJSON_IsString(it)) {
		bad_key(bad, k);
		return NULL;
	}
	return xstrdup(it->valuestring);
}

/*
 * A whole number in [0, max]; anything else (another type, a fraction, a
 * value a cast would overflow, 1e400 read as infinity) sets *bad.  max is
 * at most 2^53, so every accepted value converts exactly.
 */
static uint64_t
get_num(const cJSON *o, const char *k, uint64_t max, const char **bad)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	double v = cJSON_IsNumber(it) ? it->valuedouble : -1;

	/* The range first: only then is the cast defined. */
	if (!(v >= 0 && v <= (double)max) || v != (double)(uint64_t)v) {
		bad_key(bad, k);
		return 0;
	}
	return (uint64_t)v;
}

struct restart_marker *
restart_marker_read(const char *state_dir)
{
	char *path = xasprintf("%s/" MARKER_NAME, state_dir);
	char *text = read_file(path, MARKER_MAX, NULL);
	struct restart_marker *m;
	const char *bad = NULL;
	cJSON *o;
	char *boot;

	if (text == NULL) {
		if (errno != ENOENT)
			log_warn("%s", path);
		free(path);
		return NULL;
	}
	o = cJSON_Parse(text);
	free(text);
	m = xcalloc(1, sizeof(*m));
	if (!cJSON_IsObject(o))
		bad = "";
	else {
		m->platform = get_str(o, "platform", &bad);
		m->chat_id = get_str(o, "chat_id", &bad);
		m->thread_id = get_str(o, "thread_id", &bad);
		m->message_id = get_str(o, "message_id", &bad);
		m->wall_ms = get_num(o, "wall_ms", MARKER_NUM_MAX, &bad);
		m->mono_us = get_num(o, "mono_us", MARKER_NUM_MAX, &bad);
		m->generation = (unsigned long)get_num(o, "generation",
		    ULONG_MAX < MARKER_NUM_MAX ? ULONG_MAX : MARKER_NUM_MAX, &bad);
		boot = get_str(o, "boot_id", &bad);
		if (boot != NULL)
			snprintf(m->boot_id, sizeof(m->boot_id), "%s", boot);
		free(boot);
		if (m->platform == NULL)
			bad_key(&bad, "platform");
		if (m->chat_id == NULL)
			bad_key(&bad, "chat_id");
	}
	cJSON_Delete(o);
	if (bad != NULL) {
		if (*bad == '\0')
			log_warnx("%s: damaged restart marker removed (not a JSON object)", path);
		else
			log_warnx("%s: damaged restart marker removed (%s: missing, of the wrong "
			    "type or out of range)", path, bad);
		unlink(path);
		restart_marker_free(m);
		m = NULL;
	}
	free(path);
	return m;
}

void
restart_marker_free(struct restart_marker *m)
{
	if (m == NULL)
		return;
	free(m->platform);
	free(m->chat_id);
	free(m->thread_id);
	free(m->message_id);
	free(m);
}

int
restart_marker_delete(const char *state_dir)
{
	char *path = xasprintf("%s/" MARKER_NAME, state_dir);
	int r = unlink(path);

	if (r < 0 && errno == ENOENT)
		r = 0;
	free(path);
	return r;
}

uint64_t
restart_marker_elapsed_ms(const struct restart_marker *m)
{
	struct restart_marker now;

	memset(&now, 0, sizeof(now));
	restart_marker_stamp(&now);
	if (m->boot_id[0] != '\0' && strcmp(m->boot_id, now.boot_id) == 0 &&
	    now.mono_us >= m->mono_us)
		return (now.mono_us - m->mono_us) / 1000;
	return now.wall_ms >= m->wall_ms ? now.wall_ms - m->wall_ms : 0;
}

void
restart_reexec(char *const argv[])
{
	const char *g = getenv("HERMES_GENERATION");
	uint64_t gen = 0, n, i;
	char buf[32];

	if (g != NULL && parse_u64(g, UINT64_MAX - 1, &gen) < 0)
		gen = 0;
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(gen + 1));
	setenv("HERMES_GENERATION", buf, 1);
	/* The pid stays the same across exec, so passed sockets remain ours if still open. */
	if (getenv("LISTEN_FDS") != NULL && parse_u64(getenv("LISTEN_FDS"), 1024, &n) == 0) {
		for (i = 0; i < n; i++)
			if (fd_set_cloexec((int)(3 + i), 0) < 0)
				break;
		if (i < n) {
			unsetenv("LISTEN_FDS");
			unsetenv("LISTEN_FDNAMES");
			unsetenv("LISTEN_PID");
		} else {
			snprintf(buf, sizeof(buf), "%ld", (long)getpid());
			setenv("LISTEN_PID", buf, 1);
		}
	}
	execv("/proc/self/exe", argv);
	log_warn("re-exec of /proc/self/exe");
}

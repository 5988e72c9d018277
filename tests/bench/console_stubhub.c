/*
 * console_stubhub.c - the console platform alone, behind a stub hub that
 * echoes every message (reply sent on the next loop turn, done once the
 * send completes, as the real hub does).  Measures what the platform and
 * evhttp cost per round trip, without sessions, history or an agent.
 *
 *   console_stubhub PORT STATE_DIR      (SIGTERM/SIGINT: stop and exit)
 */
#include <signal.h>
#include <stdlib.h>

#include <event2/event.h>

#include "config.h"
#include "hub.h"
#include "log.h"
#include "platforms/console.h"
#include "util.h"

static void *plat;
static struct event_base *ev_base;

struct job {
	char *chat, *id, *text;
	plat_done_fn done;
	void *arg;
};

cJSON *
hub_status_json(struct hub *h)
{
	cJSON *o = cJSON_CreateObject();

	(void)h;
	cJSON_AddNumberToObject(o, "worker_pid", getpid());
	cJSON_AddStringToObject(o, "agent", "stub-echo");
	return o;
}

char *
config_secret(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? xstrdup(v) : NULL;
}

void
hub_platform_state(struct hub *h, const char *p, enum plat_state st, const char *d)
{
	(void)h;
	log_info("%s: state %d %s", p, st, d != NULL ? d : "");
}

static void
job_sent(void *arg, int ok)
{
	struct job *j = arg;

	(void)ok;
	j->done(j->arg);
	free(j->chat);
	free(j->id);
	free(j->text);
	free(j);
}

static void
job_run(evutil_socket_t fd, short what, void *arg)
{
	struct job *j = arg;
	struct outbound o = { j->chat, NULL, j->id, j->text };

	(void)fd;
	(void)what;
	console_ops.send(plat, &o, job_sent, j);
}

void
hub_inbound(struct hub *h, const char *p, const struct inbound *m,
    plat_done_fn done, void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));

	(void)h;
	(void)p;
	j->chat = xstrdup(m->chat_id);
	j->id = xstrdup(m->message_id);
	j->text = xstrdup(m->text);
	j->done = done;
	j->arg = arg;
	event_base_once(ev_base, -1, EV_TIMEOUT, job_run, j, NULL);
}

static void
stopped(void *arg)
{
	(void)arg;
	event_base_loopexit(ev_base, NULL);
}

static void
on_signal(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	console_ops.stop(plat, stopped, NULL);
}

int
main(int argc, char **argv)
{
	char err[512], *listen;
	cJSON *conf;
	struct event *sig_term, *sig_int;

	if (argc != 3)
		fatalx("usage: console_stubhub PORT STATE_DIR");
	log_init("console_stubhub", NULL);
	signal(SIGPIPE, SIG_IGN);
	ev_base = event_base_new();
	conf = cJSON_CreateObject();
	listen = xasprintf("127.0.0.1:%s", argv[1]);
	cJSON_AddStringToObject(conf, "listen", listen);
	struct plat_env env = { .base = ev_base, .name = "console",
	    .state_dir = argv[2], .conf = conf, .listen_fd = -1 };
	if ((plat = console_ops.create(&env, err, sizeof(err))) == NULL)
		fatal_status(78, "%s", err);
	console_ops.start(plat);
	sig_term = evsignal_new(ev_base, SIGTERM, on_signal, NULL);
	sig_int = evsignal_new(ev_base, SIGINT, on_signal, NULL);
	event_add(sig_term, NULL);
	event_add(sig_int, NULL);
	event_base_dispatch(ev_base);
	console_ops.free(plat);
	event_free(sig_term);
	event_free(sig_int);
	event_base_free(ev_base);
	cJSON_Delete(conf);
	free(listen);
	return 0;
}

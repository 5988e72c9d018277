/* fz_plat.c - helpers of the platform harnesses. */
#include "fz_plat.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "fz_util.h"
#include "platforms/console.h"

static char *fz_home;

struct event_base *
fz_plat_init(char **state_dir)
{
	struct event_base *base;

	fz_setup();
	unsetenv("HERMES_CONSOLE_TOKEN");
	unsetenv("TELEGRAM_BOT_TOKEN");
	fz_home = fz_subdir("home");
	setenv("HERMES_HOME", fz_home, 1);
	*state_dir = fz_subdir("state");
	base = event_base_new();
	FZ_CHECK(base != NULL, "event_base_new");
	return base;
}

int
fz_listen_loopback(struct sockaddr_in *addr)
{
	socklen_t sl = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	FZ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)addr, sizeof(*addr)) == 0 &&
	    listen(fd, 64) == 0 && getsockname(fd, (struct sockaddr *)addr, &sl) == 0,
	    "cannot listen on 127.0.0.1");
	return fd;
}

void *
fz_console_up(const struct fz_hub_conf *hc, const char *state, int listen_fd, const char *token)
{
	cJSON *conf = cJSON_CreateObject();
	struct plat_env env = {
		.base = hc->base, .name = "console", .state_dir = state, .listen_fd = listen_fd,
	};
	char err[256] = "";
	void *self;

	cJSON_AddStringToObject(conf, "listen", "127.0.0.1:0");
	if (token != NULL)
		cJSON_AddStringToObject(conf, "token", token);
	env.conf = conf;
	env.hub = fz_hub_begin(hc);
	self = console_ops.create(&env, err, sizeof(err));
	FZ_CHECK(self != NULL, "create: %s", err);
	cJSON_Delete(conf);             /* create keeps nothing of it */
	fz_hub_set_self(self);
	console_ops.start(self);
	FZ_CHECK(fz_hub_state() == PLAT_UP, "the console is not up on its inherited socket");
	return self;
}

static void
fz_stopped_cb(void *arg)
{
	*(int *)arg = 1;
}

void
fz_platform_down(struct event_base *base, const struct platform_ops *ops, void *self)
{
	int stopped = 0;

	ops->stop(self, fz_stopped_cb, &stopped);
	while (!stopped)
		event_base_loop(base, EVLOOP_ONCE);
	ops->free(self);
	FZ_CHECK(fz_hub_state() == PLAT_STOPPED, "%s did not report its stop", ops->name);
	FZ_CHECK(fz_hub_sends_settled(), "%s: a send callback did not run exactly once",
	    ops->name);
}

int
fz_console_ident_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > 128)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return fz_utf8_valid(s, n);
}

cJSON *
fz_read_json(const char *dir, const char *name)
{
	char *text = fz_read(dir, name, NULL);
	cJSON *j = text != NULL ? cJSON_Parse(text) : NULL;

	free(text);
	return j;
}

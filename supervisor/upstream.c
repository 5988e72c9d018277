/* upstream.c - sd_notify towards systemd. */
#include "upstream.h"
#include "log.h"
#include "notify.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char *up_spec;
static uint64_t up_watchdog;

void
upstream_init(void)
{
	const char *s = getenv("NOTIFY_SOCKET"), *wd = getenv("WATCHDOG_USEC");
	const char *wpid = getenv("WATCHDOG_PID");
	uint64_t v;

	if (s != NULL && *s != '\0')
		up_spec = xstrdup(s);
	if (wd != NULL && parse_u64(wd, UINT64_MAX, &v) == 0 && v > 0) {
		uint64_t p;

		if (wpid == NULL || (parse_u64(wpid, 4194304, &p) == 0 && (pid_t)p == getpid()))
			up_watchdog = v;
	}
}

int
upstream_enabled(void)
{
	return up_spec != NULL;
}

uint64_t
upstream_watchdog_usec(void)
{
	return up_spec != NULL ? up_watchdog : 0;
}

void
upstream_send(const char *fmt, ...)
{
	static int warned;
	char msg[1024];
	va_list ap;

	if (up_spec == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (notify_send_to(up_spec, msg) < 0 && !warned) {
		log_warn("cannot notify %s", up_spec);
		warned = 1;
	}
}

/*
 * agent_echo.c - the echo backend: the reply is exactly the user's text.
 * The default on a fresh machine; delivered from the event loop like
 * every other backend's reply, so callers see the same life cycle.
 */
#include "agent_impl.h"

/* Schedules the user's own text as the reply. */
static int
echo_start(struct agent_call *c, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	agent_call_done_later(c, 1, c->req.text);
	return 0;
}

/* Nothing to free: a pending echo is only its deferred completion. */
static void
echo_cancel(struct agent_call *c)
{
	(void)c;
}

const struct agent_backend agent_echo_backend = {
	.name = "echo",
	.keys = NULL,
	.create = NULL,
	.destroy = NULL,
	.start = echo_start,
	.cancel = echo_cancel,
};

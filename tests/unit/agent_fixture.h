/*
 * agent_fixture.h - what the agent backends' unit tests share (header
 * only): a recorder for the reply callback.
 */
#ifndef HERMES_AGENT_FIXTURE_H
#define HERMES_AGENT_FIXTURE_H

#include <stdio.h>

/* What one agent call answered, and how often its callback ran. */
struct reply {
	int done;
	int calls;
	int ok;
	char text[8192];
};

/* An agent_reply_fn recording into the struct reply at arg. */
static void
reply_cb(void *arg, int ok, const char *text)
{
	struct reply *r = arg;

	r->calls++;
	r->done = 1;
	r->ok = ok;
	snprintf(r->text, sizeof(r->text), "%s", text);
}

#endif

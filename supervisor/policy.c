/* policy.c - exit classification, backoff and the crash-limit window. */
#include "policy.h"
#include "util.h"

#include <stdlib.h>
#include <sys/wait.h>

enum policy_action
policy_classify(int status, int was_ready, int killed)
{
	int code;

	if (killed || !WIFEXITED(status))
		return ACT_BACKOFF;
	code = WEXITSTATUS(status);
	if (code == 0)
		return ACT_EXIT_OK;
	if (code == EXIT_CONFIG)
		return ACT_EXIT_CONFIG;
	if (code == EXIT_RESTART && was_ready)
		return ACT_RESPAWN;
	return ACT_BACKOFF;     /* includes 75 without READY: a restart loop */
}

uint64_t
policy_backoff(unsigned n, uint64_t max_usec)
{
	uint64_t d = POLICY_FIRST_USEC;

	while (n-- > 1 && d < max_usec)
		d *= 2;
	return d < max_usec ? d : max_usec;
}

void
crashwin_init(struct crashwin *w, unsigned limit, uint64_t window_usec)
{
	w->t = xcalloc(limit, sizeof(*w->t));
	w->limit = limit;
	w->window = window_usec;
	w->head = 0;
	w->count = 0;
}

void
crashwin_free(struct crashwin *w)
{
	free(w->t);
	w->t = NULL;
}

/* Full of failures no older than the window means the limit is reached (times only grow). */
int
crashwin_add(struct crashwin *w, uint64_t now)
{
	w->t[w->head] = now;
	w->head = (w->head + 1) % w->limit;
	if (w->count < w->limit)
		w->count++;
	return w->count == w->limit && now - w->t[w->head] < w->window;
}

/*
 * policy.h - the lifecycle policy as pure functions: what a worker's end
 * means, how long to back off, and when to give up.  No I/O, no clocks:
 * callers pass the time in, so every rule is unit-testable.
 */
#ifndef HERMES_SUP_POLICY_H
#define HERMES_SUP_POLICY_H

#include <stdint.h>

#define EXIT_RESTART 75         /* worker asks to be respawned at once */
#define EXIT_CONFIG 78          /* bad configuration: do not respawn */

/* A worker's readiness resets the backoff after it was READY this long. */
#define POLICY_RESET_USEC (60 * 1000000ull)
/* The first backoff delay. */
#define POLICY_FIRST_USEC (100 * 1000ull)

enum policy_action {
	ACT_RESPAWN,            /* respawn at once */
	ACT_BACKOFF,            /* a failure: respawn after a delay */
	ACT_EXIT_OK,            /* the supervisor exits 0 */
	ACT_EXIT_CONFIG,        /* the supervisor exits 78 */
};

/*
 * Decides what a worker's end means.  status is from waitpid();
 * was_ready tells whether it ever sent READY=1; killed tells whether the
 * supervisor killed it (hung, or stuck in teardown).
 */
enum policy_action policy_classify(int status, int was_ready, int killed);

/* The delay before respawn after the nth consecutive failure (n >= 1). */
uint64_t policy_backoff(unsigned n, uint64_t max_usec);

/* Failure times inside the crash-limit window (a ring of the last ones). */
struct crashwin {
	uint64_t *t;
	unsigned limit;
	uint64_t window;
	unsigned head, count;
};

void crashwin_init(struct crashwin *w, unsigned limit, uint64_t window_usec);
void crashwin_free(struct crashwin *w);
/* Records a failure at now; returns 1 when the limit is reached (give up). */
int crashwin_add(struct crashwin *w, uint64_t now);

#endif

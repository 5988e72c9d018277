/*
 * upstream.h - what the supervisor tells systemd (Type=notify) when it
 * was given a NOTIFY_SOCKET, and systemd's watchdog period for us.
 */
#ifndef HERMES_SUP_UPSTREAM_H
#define HERMES_SUP_UPSTREAM_H

#include <stdint.h>

/*
 * Takes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the environment.
 * (The worker never sees systemd's values: spawn sets its own.)
 */
void upstream_init(void);

/* 1 when there is a NOTIFY_SOCKET to talk to. */
int upstream_enabled(void);

/* systemd's watchdog period for us in microseconds, 0 when none. */
uint64_t upstream_watchdog_usec(void);

/* Sends one message (newline-separated KEY=VALUE lines) if enabled. */
void upstream_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

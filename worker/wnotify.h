/*
 * wnotify.h - the worker's side of sd_notify: readiness, status, the
 * watchdog heartbeat from the event loop, and the stop announcement.
 * Works the same under hermes-supervisor and directly under systemd.
 */
#ifndef HERMES_WNOTIFY_H
#define HERMES_WNOTIFY_H

#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct wnotify;

/*
 * The watchdog ping interval in microseconds for the given WATCHDOG_USEC
 * and WATCHDOG_PID values (either may be NULL): half the period, or 0
 * when the watchdog is off, malformed, or meant for another pid.
 */
uint64_t wnotify_interval(const char *usec, const char *pid, pid_t self);

/* Reads the environment and starts the heartbeat timer when asked for. */
struct wnotify *wnotify_new(struct event_base *base);
void wnotify_free(struct wnotify *n);
/* READY=1 (sent once). */
void wnotify_ready(struct wnotify *n);
/* STATUS=line, sent only when it changed. */
void wnotify_status(struct wnotify *n, const char *line);
/* STOPPING=1. */
void wnotify_stopping(struct wnotify *n);
/* The heartbeat interval in use (0 = none). */
uint64_t wnotify_watchdog_interval(const struct wnotify *n);

#endif

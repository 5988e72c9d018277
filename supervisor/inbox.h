/*
 * inbox.h - the private NOTIFY_SOCKET the worker reports to.
 *
 * A datagram socket with SO_PASSCRED: only datagrams whose SCM_CREDENTIALS
 * carry the current worker's pid are accepted; everything else (another
 * sender, a malformed or oversized datagram) is dropped and logged (at most
 * once a second, with a count of what was dropped in between).
 */
#ifndef HERMES_SUP_INBOX_H
#define HERMES_SUP_INBOX_H

#include <stddef.h>
#include <sys/types.h>

#include "notify.h"

/*
 * Binds the socket as DIR/notify (an abstract name if the path is too
 * long) and writes its NOTIFY_SOCKET value into spec.  Returns the fd or -1.
 */
int inbox_open(const char *dir, char *spec, size_t specsz);

/*
 * Receives one datagram.  Returns 1 when m holds a message from pid,
 * 0 when a datagram was dropped, -1 when there is nothing more to read.
 */
int inbox_recv(int fd, pid_t pid, struct notify_msg *m);

/* Closes the socket and removes its path. */
void inbox_close(int fd, const char *spec);

#endif

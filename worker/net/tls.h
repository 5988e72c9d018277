/*
 * tls.h - the client TLS context: peers always verified against the
 * system CA store plus an optional extra bundle (config tls.ca_file).
 */
#ifndef HERMES_TLS_H
#define HERMES_TLS_H

#include <openssl/ssl.h>

struct tls_ctx;

/* ca_file may be NULL.  Returns NULL with a message in err on failure. */
struct tls_ctx *tls_ctx_new(const char *ca_file, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *t);
/* A new SSL for a connection to host: SNI and host-name verification set. */
SSL *tls_ssl_new(struct tls_ctx *t, const char *host);
/*
 * Why the peer's certificate was refused on this connection (e.g.
 * "unable to get local issuer certificate"), or "" when it was not.
 */
const char *tls_verify_error(SSL *ssl);

#endif

/*
 * tls.c - the client TLS context.
 *
 * Peers are always verified: the system CA store plus an optional extra
 * bundle, SSL_VERIFY_PEER, and the expected host name (or IP address)
 * checked against the certificate.  There is no switch to turn that off.
 */
#include "net/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "util.h"

struct tls_ctx {
	SSL_CTX *ctx;
};

/* Formats the oldest queued OpenSSL error (or "unknown error") into buf. */
static void
tls_last_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

struct tls_ctx *
tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	struct tls_ctx *t;
	SSL_CTX *ctx;
	char why[256];

	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		tls_last_error(why, sizeof(why));
		snprintf(err, errlen, "cannot create a TLS context: %s", why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* The system store may be absent on a minimal machine; ca_file may suffice. */
	if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ERR_clear_error();
		log_warnx("tls: the system CA store could not be loaded");
	}
	if (ca_file != NULL && ca_file[0] != '\0' &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		tls_last_error(why, sizeof(why));
		snprintf(err, errlen, "tls.ca_file: cannot load CA bundle %s: %s",
		    ca_file, why);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	t = xcalloc(1, sizeof(*t));
	t->ctx = ctx;
	return t;
}

void
tls_ctx_free(struct tls_ctx *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/* Returns 1 when host is a literal IPv4 or IPv6 address. */
static int
tls_host_is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL *
tls_ssl_new(struct tls_ctx *t, const char *host)
{
	SSL *ssl;
	int ok;

	if (t == NULL || host == NULL || host[0] == '\0')
		return NULL;
	ssl = SSL_new(t->ctx);
	if (ssl == NULL) {
		ERR_clear_error();
		return NULL;
	}
	if (tls_host_is_ip(host)) {
		/* No SNI for addresses (RFC 6066); match the IP SAN instead. */
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
	} else {
		ok = SSL_set_tlsext_host_name(ssl, host) == 1 &&
		    SSL_set1_host(ssl, host) == 1;
	}
	if (!ok) {
		ERR_clear_error();
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	return ssl;
}

/* Describes why the peer's certificate was refused, or "" when it was not. */
const char *
tls_verify_error(SSL *ssl)
{
	long r;

	if (ssl == NULL)
		return "";
	r = SSL_get_verify_result(ssl);
	if (r == X509_V_OK)
		return "";
	return X509_verify_cert_error_string(r);
}

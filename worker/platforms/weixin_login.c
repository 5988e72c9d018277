/* weixin_login.c - `hermes-worker login weixin` (see weixin_login.h). */
#include "platforms/weixin_login.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <qrencode.h>

#include "config.h"
#include "json.h"
#include "log.h"
#include "net/http.h"
#include "net/tls.h"
#include "platforms/ilink.h"
#include "util.h"

#define LOGIN_BOT_TYPE   "3"
#define LOGIN_REFRESHES  3              /* new codes after the first one expired */
#define LOGIN_HOLD_SEC   40             /* a status poll is held up to 35 s by the server */

struct login {
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct http_client *http;
	struct event *timer, *input;
	char *qr_base;                  /* where codes come from */
	char *poll_base;                /* where their status is polled (moved by a redirect) */
	char *qrcode, *verify, *home;
	char in[128];                   /* what was typed, up to a line */
	size_t inlen;
	int refreshes, scanned, errors, code;
	uint64_t deadline;
};

static const struct timeval login_second = { 1, 0 };

static void login_poll(struct login *l);

/* Ends the login with code (0: logged in). */
static void
login_end(struct login *l, int code, const char *why)
{
	if (why != NULL)
		fprintf(stderr, "\nweixin login: %s\n", why);
	l->code = code;
	event_base_loopbreak(l->base);
}

int
weixin_login_draw(FILE *f, const char *text)
{
	QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_L, QR_MODE_8, 1);
	int x, y, w, top, bot, quiet = 2;

	if (q == NULL)
		return -1;
	w = q->width;
	for (y = -quiet; y < w + quiet; y += 2) {
		for (x = -quiet; x < w + quiet; x++) {
			/* a module is dark when inside and its low bit is set */
			top = x >= 0 && x < w && y >= 0 && y < w && (q->data[y * w + x] & 1);
			bot = x >= 0 && x < w && y + 1 >= 0 && y + 1 < w &&
			    (q->data[(y + 1) * w + x] & 1);
			fputs(!top && !bot ? "\u2588" : !top ? "\u2580" : !bot ? "\u2584" : " ", f);
		}
		fputc('\n', f);
	}
	QRcode_free(q);
	return 0;
}

/* GET base/ilink/bot/<endpoint> without a token, as the QR endpoints are. */
static void
login_get(struct login *l, const char *base, const char *endpoint, http_done_fn cb)
{
	struct ilink_hdrs h;
	char *url = xasprintf("%s/ilink/bot/%s", base, endpoint);
	struct http_req req = { .method = "GET", .url = url, .headers = h.v + 2,
		.timeout = LOGIN_HOLD_SEC, .max_body = 65536 };

	ilink_headers(&h);              /* iLink-App-Id and the version only */
	if (http_request(l->http, &req, cb, l) == NULL)
		login_end(l, 1, "the base URL is not usable");
	free(url);
}

static void
login_qr_done(void *arg, const struct http_response *r)
{
	struct login *l = arg;
	char why[300], esc[1024];
	cJSON *o;
	const char *code, *img;

	if (ilink_answer("get_bot_qrcode", r, &o, why, sizeof(why)) != ILINK_OK) {
		login_end(l, 1, why);
		return;
	}
	code = json_str(o, "qrcode");
	img = json_str(o, "qrcode_img_content");
	if (code == NULL || code[0] == '\0') {
		cJSON_Delete(o);
		login_end(l, 1, "get_bot_qrcode: the answer holds no qrcode");
		return;
	}
	free(l->qrcode);
	l->qrcode = xstrdup(code);
	l->scanned = 0;
	printf("\nScan this QR code with WeChat to log the bot in:\n\n");
	if (weixin_login_draw(stdout, img != NULL && img[0] != '\0' ? img : code) < 0)
		printf("(the code cannot be drawn here)\n");
	if (img != NULL && img[0] != '\0')
		printf("\nOr open this link in WeChat: %s\n", log_escape(esc, sizeof(esc), img,
		    strlen(img)));
	fflush(stdout);
	cJSON_Delete(o);
	login_poll(l);
}

static void
login_fetch(struct login *l)
{
	login_get(l, l->qr_base, "get_bot_qrcode?bot_type=" LOGIN_BOT_TYPE, login_qr_done);
}

/* Writes the account file and says what to configure. */
static void
login_confirmed(struct login *l, const cJSON *o)
{
	const char *id = json_str(o, "ilink_bot_id"), *b = json_str(o, "baseurl");
	const char *token = json_str(o, "bot_token"), *user = json_str(o, "ilink_user_id");
	char err[600], esc[200], *path = ilink_account_path(l->home, id, ".json");

	if (b == NULL || strncmp(b, "http", 4) != 0 || strpbrk(b, " \t\r\n") != NULL)
		b = l->poll_base;
	if (path == NULL || token == NULL || token[0] == '\0') {
		free(path);
		login_end(l, 1, "the login was confirmed without a usable bot id or token");
		return;
	}
	if (ilink_account_save(path, token, b, user, err, sizeof(err)) < 0) {
		free(path);
		login_end(l, 1, err);
		return;
	}
	printf("\nLogged in: account_id %s, saved to %s\n", id, path);
	if (user != NULL && user[0] != '\0')
		printf("The WeChat user who confirmed it: %s (for allowed_users and admins)\n",
		    log_escape(esc, sizeof(esc), user, strlen(user)));
	printf("Set platforms.weixin.account_id (or WEIXIN_ACCOUNT_ID) to %s; the token is read "
	    "from that file.\n", id);
	fflush(stdout);
	free(path);
	login_end(l, 0, NULL);
}

/* Takes one line typed in as the verification code; returns 1 when there was one. */
static int
login_take_line(struct login *l)
{
	char *nl = memchr(l->in, '\n', l->inlen);
	size_t n;

	if (nl == NULL)
		return 0;
	n = (size_t)(nl - l->in);
	free(l->verify);
	l->verify = xstrndup(l->in, n);
	l->verify[strcspn(l->verify, "\r")] = '\0';
	l->inlen -= n + 1;
	memmove(l->in, nl + 1, l->inlen);
	return 1;
}

static void
login_input_cb(evutil_socket_t fd, short what, void *arg)
{
	struct login *l = arg;
	ssize_t n = read(fd, l->in + l->inlen, sizeof(l->in) - 1 - l->inlen);

	(void)what;
	if (n > 0)
		l->inlen += (size_t)n;
	else if (l->inlen > 0)
		l->in[l->inlen++] = '\n';      /* the last line, without its newline */
	if (login_take_line(l))
		login_poll(l);
	else if (n <= 0 || l->inlen >= sizeof(l->in) - 1)
		login_end(l, 1, "WeChat shows a verification code: run the login in a terminal "
		    "to type it");
	else
		event_add(l->input, NULL);
}

/* Follows an IDC redirect: polling goes on at https://<redirect_host>. */
static void
login_redirect(struct login *l, const char *host)
{
	if (host == NULL || host[0] == '\0' || strspn(host, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(host)) {
		log_warnx("weixin login: a redirect without a usable host; polling on");
		return;
	}
	free(l->poll_base);
	l->poll_base = xasprintf("https://%s", host);
}

/* One status answer: go on polling (after a second), fetch a new code, or end. */
static void
login_status(struct login *l, const char *st, const cJSON *o)
{
	if (strcmp(st, "confirmed") == 0) {
		login_confirmed(l, o);
		return;
	}
	if (strcmp(st, "scaned") == 0 && !l->scanned++)
		printf("\nScanned: confirm the login in WeChat.\n");
	else if (strcmp(st, "scaned_but_redirect") == 0)
		login_redirect(l, json_str(o, "redirect_host"));
	else if (strcmp(st, "expired") == 0) {
		if (l->refreshes++ >= LOGIN_REFRESHES) {
			login_end(l, 1, "the QR code expired again and again: run the login anew");
			return;
		}
		printf("\nThe QR code expired; here is a new one (%d/%d).\n", l->refreshes,
		    LOGIN_REFRESHES);
		free(l->poll_base);
		l->poll_base = xstrdup(l->qr_base);
		login_fetch(l);
		return;
	} else if (strcmp(st, "need_verifycode") == 0) {
		printf("\nType the verification code WeChat shows, then Enter: ");
		fflush(stdout);
		if (login_take_line(l))
			login_poll(l);
		else
			event_add(l->input, NULL);
		return;
	} else if (strcmp(st, "verify_code_blocked") == 0) {
		login_end(l, 1, "too many wrong verification codes: run the login anew later");
		return;
	} else if (strcmp(st, "binded_redirect") == 0) {
		login_end(l, 1, "this bot is already bound to another login");
		return;
	} else
		printf(".");
	fflush(stdout);
	evtimer_add(l->timer, &login_second);
}

static void
login_status_done(void *arg, const struct http_response *r)
{
	struct login *l = arg;
	char why[300];
	cJSON *o;
	const char *st;

	if (ilink_answer("get_qrcode_status", r, &o, why, sizeof(why)) != ILINK_OK) {
		/* a gateway timeout or a held poll cut short: keep polling, within reason */
		if (r->status != 0 || strstr(r->error != NULL ? r->error : "", "timed out") == NULL)
			log_warnx("weixin login: %s", why);
		if (++l->errors > 20) {
			login_end(l, 1, why);
			return;
		}
		evtimer_add(l->timer, &login_second);
		return;
	}
	l->errors = 0;
	st = json_str(o, "status");
	login_status(l, st != NULL ? st : "wait", o);
	cJSON_Delete(o);
}

static void
login_poll(struct login *l)
{
	char *code = evhttp_encode_uri(l->qrcode), *v = NULL, *ep;

	if (mono_usec() >= l->deadline) {
		free(code);
		login_end(l, 1, "timed out waiting for the QR code to be scanned");
		return;
	}
	if (l->verify != NULL)
		v = evhttp_encode_uri(l->verify);
	ep = xasprintf("get_qrcode_status?qrcode=%s%s%s", code, v != NULL ? "&verify_code=" : "",
	    v != NULL ? v : "");
	free(l->verify);                /* sent once: a wrong one is asked for again */
	l->verify = NULL;
	login_get(l, l->poll_base, ep, login_status_done);
	free(ep);
	free(code);
	free(v);
}

static void
login_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	login_poll(arg);
}

/* The base URL: --base-url, else platforms.weixin.base_url, WEIXIN_BASE_URL, the default. */
static char *
login_base(const struct config *cfg, const char *arg)
{
	const struct config_platform *p = config_platform(cfg, "weixin");
	const cJSON *v = p != NULL ? cJSON_GetObjectItemCaseSensitive(p->section, "base_url") :
	    NULL;
	char *s = arg != NULL ? xstrdup(arg) : cJSON_IsString(v) ? xstrdup(v->valuestring) :
	    config_secret("WEIXIN_BASE_URL");
	size_t n;

	if (s == NULL || s[0] == '\0') {
		free(s);
		s = xstrdup(ILINK_DEFAULT_BASE);
	}
	for (n = strlen(s); n > 0 && s[n - 1] == '/'; n--)
		s[n - 1] = '\0';
	return s;
}

static int
login_usage(void)
{
	fprintf(stderr, "usage: hermes-worker login weixin [-c|--config FILE] [--base-url URL] "
	    "[--timeout SECONDS]\n");
	return 78;
}

/* Sets the login up from the command line and the configuration; returns 0 or an exit code. */
static int
login_setup(struct login *l, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "base-url", required_argument, NULL, 'b' },
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cpath = NULL, *base = NULL;
	uint64_t timeout = 480;
	char err[1024];
	struct config *cfg;
	int ch;

	while ((ch = getopt_long(argc, argv, "c:", opts, NULL)) != -1)
		if (ch == 'c')
			cpath = optarg;
		else if (ch == 'b')
			base = optarg;
		else if (ch != 't' || parse_u64(optarg, 86400, &timeout) < 0 || timeout == 0)
			return login_usage();
	if (optind != argc || (base != NULL && strncmp(base, "https://", 8) != 0 &&
	    strncmp(base, "http://", 7) != 0))
		return login_usage();
	if ((cfg = config_load(cpath, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 78;
	}
	l->qr_base = login_base(cfg, base);
	l->poll_base = xstrdup(l->qr_base);
	l->home = xstrdup(cfg->hermes_home);
	l->deadline = mono_usec() + timeout * 1000000;
	l->tls = tls_ctx_new(cfg->ca_file, err, sizeof(err));
	config_free(cfg);
	if (l->tls == NULL) {
		fprintf(stderr, "TLS: %s\n", err);
		return 78;
	}
	return 0;
}

int
weixin_login_main(int argc, char **argv)
{
	struct login l;
	int code;

	memset(&l, 0, sizeof(l));
	l.code = 1;
	signal(SIGPIPE, SIG_IGN);
	if ((code = login_setup(&l, argc, argv)) == 0) {
		if ((l.base = event_base_new()) == NULL ||
		    (l.dns = evdns_base_new(l.base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL)
			fatalx("%s: cannot set up the event loop", __func__);
		l.http = http_client_new(l.base, l.dns, l.tls);
		l.timer = evtimer_new(l.base, login_timer_cb, &l);
		l.input = event_new(l.base, STDIN_FILENO, EV_READ, login_input_cb, &l);
		if (l.timer == NULL || l.input == NULL)
			fatalx("%s: out of memory", __func__);
		login_fetch(&l);
		event_base_dispatch(l.base);
		code = l.code;
		http_client_free(l.http);
		event_free(l.timer);
		event_free(l.input);
		evdns_base_free(l.dns, 0);
		event_base_free(l.base);
	}
	tls_ctx_free(l.tls);
	free(l.qr_base);
	free(l.poll_base);
	free(l.qrcode);
	free(l.verify);
	free(l.home);
	return code;
}

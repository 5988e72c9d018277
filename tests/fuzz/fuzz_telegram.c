/*
 * fuzz_telegram.c - the Telegram platform's parsers exported by
 * worker/platforms/telegram.h: Update parsing, Bot API reply
 * classification, UTF-16 offsets, and the backoff formula.
 *
 * Input: a byte choosing the mode, a byte of parameters, then data.
 * 0 update    data is an Update object.  Invariants: a message for the hub
 *             has numeric chat and user ids, the message id
 *             "<chat>:<message_id>", a non-empty text whose command (if
 *             any) names no bot any more, a thread id exactly for a topic,
 *             and is addressed in a private chat; a skip or a refusal
 *             gives a reason and leaves nothing allocated.
 * 1 built     an Update is built from the data (chat type, ids, topic,
 *             sender, text): the parse must give back exactly those fields,
 *             skip channels, bots and empty texts, drop "@bot" from our
 *             commands and skip commands for other bots.
 * 2 reply     data is a Bot API reply body with a status from the
 *             parameters.  Invariants: TG_OK exactly with a document and a
 *             result inside it; retry_after within 0..3600; the reason is
 *             printable ASCII (safe for the log) and said for every kind.
 * 3 utf16     data is text (256 bytes at most); tg_utf16_offset() is monotonic, within the
 *             text, on a character boundary of valid UTF-8 and the least
 *             one covering the asked units; tg_backoff() stays within its
 *             documented range.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fz_util.h"
#include "platforms/telegram.h"
#include "util.h"

#define BOT_ID 4242

static void
bot_from(uint8_t param, struct tg_bot *bot)
{
	static const char *const names[] = { "fuzzbot", "Fuzz_Bot", NULL };

	bot->id = BOT_ID;
	bot->username = names[param % 3];
	bot->group_all = (param >> 2) & 1;
}

/* What any parse result must satisfy. */
static void
check_msg(int rc, const char *why, const struct tg_msg *m)
{
	char want[72];
	size_t tok;

	FZ_CHECK(rc >= -1 && rc <= 1, "rc %d", rc);
	if (rc <= 0) {
		FZ_CHECK(why != NULL && why[0] != '\0', "a skip without a reason");
		FZ_CHECK(m->text == NULL && m->user_name == NULL, "a skip left strings allocated");
		return;
	}
	FZ_CHECK(why == NULL, "a message with a skip reason");
	FZ_CHECK(fz_is_int(m->chat_id) && fz_is_int(m->user_id), "ids \"%s\" \"%s\"", m->chat_id,
	    m->user_id);
	FZ_CHECK(strncmp(m->message_id, m->chat_id, strlen(m->chat_id)) == 0 &&
	    m->message_id[strlen(m->chat_id)] == ':' &&
	    fz_is_int(m->message_id + strlen(m->chat_id) + 1), "message id \"%s\"", m->message_id);
	snprintf(want, sizeof(want), "%s", m->message_id);
	FZ_CHECK(m->text != NULL && m->text[0] != '\0', "no text");
	if (m->text[0] == '/') {
		tok = strcspn(m->text, " \t\n");
		FZ_CHECK(memchr(m->text, '@', tok) == NULL, "a command still names a bot: %.60s",
		    m->text);
		FZ_CHECK(m->addressed, "a command is not addressed");
	}
	FZ_CHECK((m->chat_type == CHAT_THREAD) == (m->thread_id[0] != '\0'), "thread id");
	FZ_CHECK(m->thread_id[0] == '\0' || fz_is_int(m->thread_id), "thread id \"%s\"", m->thread_id);
	FZ_CHECK(m->chat_type != CHAT_DM || m->addressed, "a private message not addressed");
	FZ_CHECK(m->user_name == NULL || m->user_name[0] != '\0', "an empty user name");
}

static void
check_update(uint8_t param, const char *text)
{
	cJSON *j = cJSON_Parse(text);
	struct tg_bot bot;
	struct tg_msg m;
	const char *why;
	int rc;

	bot_from(param, &bot);
	rc = tg_update_parse(j, &bot, &m, &why);
	check_msg(rc, why, &m);
	tg_msg_clear(&m);
	cJSON_Delete(j);
}

/* An id from the data within what a double holds exactly. */
static int64_t
id_from(struct fz_in *in)
{
	int64_t v = (int64_t)(fz_u32(in) % 2000000000u) * ((fz_u8(in) & 1) ? -1 : 1);

	return v * (int64_t)(1 + fz_u8(in) % 3);
}

static void
check_built(uint8_t param, struct fz_in *in)
{
	static const char *const types[] = { "private", "group", "supergroup", "channel" };
	const char *type = types[fz_u8(in) % 4];
	int64_t chat = id_from(in), user = id_from(in), mid = id_from(in), thread = id_from(in);
	uint8_t f = fz_u8(in);
	int topic = f & 1, is_bot = (f >> 1) & 1, named = (f >> 2) & 1;
	char *text = fz_rest_str(in, NULL), want[72], *rest;
	cJSON *u = cJSON_CreateObject(), *msg, *from;
	struct tg_bot bot;
	struct tg_msg m;
	const char *why;
	int rc, other = 0;
	size_t tok;

	bot_from(param, &bot);
	cJSON_AddNumberToObject(u, "update_id", 1);
	msg = cJSON_AddObjectToObject(u, "message");
	cJSON_AddNumberToObject(msg, "message_id", (double)mid);
	cJSON_AddNumberToObject(msg, "date", 1733000000);
	cJSON_AddStringToObject(msg, "text", text);
	if (topic) {
		cJSON_AddTrueToObject(msg, "is_topic_message");
		cJSON_AddNumberToObject(msg, "message_thread_id", (double)thread);
	}
	cJSON_AddNumberToObject(cJSON_AddObjectToObject(msg, "chat"), "id", (double)chat);
	cJSON_AddStringToObject(cJSON_GetObjectItem(msg, "chat"), "type", type);
	from = cJSON_AddObjectToObject(msg, "from");
	cJSON_AddNumberToObject(from, "id", (double)user);
	cJSON_AddBoolToObject(from, "is_bot", is_bot);
	if (named)
		cJSON_AddStringToObject(from, "username", "someone");
	rc = tg_update_parse(u, &bot, &m, &why);
	check_msg(rc, why, &m);
	tok = strcspn(text, " \t\n");
	if (text[0] == '/' && memchr(text, '@', tok) != NULL) {
		const char *at = memchr(text, '@', tok);

		other = bot.username == NULL || (size_t)(text + tok - at - 1) != strlen(bot.username) ||
		    strncasecmp(at + 1, bot.username, strlen(bot.username)) != 0;
	}
	if (text[0] == '@') {
		/* A leading mention is the bot's business; check_msg() covered the result. */
	} else if (strcmp(type, "channel") == 0 || is_bot || text[0] == '\0' || other) {
		FZ_CHECK(rc == 0, "rc %d for a %s message (bot %d, other bot %d)", rc, type, is_bot,
		    other);
	} else {
		FZ_CHECK(rc == 1, "rc %d (%s) for a message from a %s chat", rc, why, type);
		snprintf(want, sizeof(want), "%" PRId64 ":%" PRId64, chat, mid);
		FZ_CHECK(strcmp(m.message_id, want) == 0, "message id %s, want %s", m.message_id,
		    want);
		FZ_CHECK(m.chat_type == (strcmp(type, "private") == 0 ? CHAT_DM :
		    topic ? CHAT_THREAD : CHAT_GROUP), "chat type %d", m.chat_type);
		FZ_CHECK(m.time == 1733000000 && (named ? m.user_name != NULL &&
		    strcmp(m.user_name, "someone") == 0 : m.user_name == NULL), "time or name");
		if (text[0] != '/')
			FZ_CHECK(strcmp(m.text, text) == 0, "plain text changed: %.60s", m.text);
		if (text[0] == '/' && memchr(text, '@', tok) != NULL) {
			rest = xasprintf("%.*s%s", (int)((const char *)memchr(text, '@', tok) - text),
			    text, text + tok);
			FZ_CHECK(strcmp(m.text, rest) == 0, "\"%.40s\" became \"%.40s\"", text, m.text);
			free(rest);
		}
	}
	tg_msg_clear(&m);
	cJSON_Delete(u);
	free(text);
}

static void
check_reply(uint8_t param, struct fz_in *in)
{
	static const int statuses[] = { 200, 200, 400, 401, 403, 404, 409, 429, 500, 502, 0, 302 };
	int status = statuses[param % ARRAY_LEN(statuses)];
	size_t len, i;
	const uint8_t *body = fz_take(in, in->n, &len);
	const cJSON *result = (const cJSON *)1;
	double ra = -1;
	cJSON *doc = (cJSON *)1;
	char why[200];
	enum tg_reply k;

	memset(why, 'x', sizeof(why));
	k = tg_reply_classify(status, (const char *)body, len, &doc, &result, &ra, why,
	    sizeof(why));
	FZ_CHECK(k >= TG_OK && k <= TG_TRANSIENT, "kind %d", (int)k);
	FZ_CHECK((k == TG_OK) == (doc != NULL), "a document with kind %d", (int)k);
	FZ_CHECK((k == TG_OK) == (result != NULL), "a result with kind %d", (int)k);
	FZ_CHECK(ra >= 0 && ra <= 3600 && (k == TG_RETRY_AFTER || ra == 0), "retry_after %g", ra);
	if (k == TG_OK) {
		FZ_CHECK(status == 200 && cJSON_IsTrue(cJSON_GetObjectItem(doc, "ok")) &&
		    result == cJSON_GetObjectItemCaseSensitive(doc, "result"), "an OK that is not");
		cJSON_Delete(doc);
		return;
	}
	FZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL && why[0] != '\0', "no reason");
	for (i = 0; why[i] != '\0'; i++)
		FZ_CHECK(why[i] >= 0x20 && why[i] < 0x7f, "byte 0x%02x in the reason",
		    (unsigned char)why[i]);
	if (status == 401 || status == 404)
		FZ_CHECK(k == TG_UNAUTHORIZED || k == TG_CONFLICT || k == TG_RETRY_AFTER,
		    "HTTP %d gave kind %d", status, (int)k);
}

/* UTF-16 units of s[0..n), counted the way Telegram counts them. */
static size_t
units_of(const char *s, size_t n)
{
	size_t i, u = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c & 0xc0) != 0x80)
			u += c >= 0xf0 ? 2 : 1;
	}
	return u;
}

static void
check_utf16(uint8_t param, struct fz_in *in)
{
	size_t len, units, prev = 0, off, k;
	char *s = fz_str(in, 256);
	int valid;
	uint64_t b, min = (uint64_t)param * 1000, max = (uint64_t)(param ^ 0x5a) * 100000;

	len = strlen(s);
	valid = fz_utf8_valid(s, len);
	for (units = 0; units <= len * 2 + 2; units++) {
		off = tg_utf16_offset(s, len, units);
		FZ_CHECK(off <= len && off >= prev, "offset %zu for %zu units (before %zu)", off,
		    units, prev);
		if (valid) {
			FZ_CHECK(off == len || ((unsigned char)s[off] & 0xc0) != 0x80,
			    "offset %zu cuts a character", off);
			FZ_CHECK(off == len || units_of(s, off) >= units, "offset %zu short of %zu units",
			    off, units);
			for (k = off; k > 0 && ((unsigned char)s[k - 1] & 0xc0) == 0x80; k--)
				;
			FZ_CHECK(off == 0 || units_of(s, k > 0 ? k - 1 : 0) < units,
			    "offset %zu is not the least for %zu units", off, units);
		}
		prev = off;
	}
	b = tg_backoff(param % 40, min, max);
	FZ_CHECK(max < min || (b <= max && (min < 2 || b >= min / 2)), "backoff %llu from %llu..%llu",
	    (unsigned long long)b, (unsigned long long)min, (unsigned long long)max);
	free(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in), param = fz_u8(&in);
	char *text;

	switch (mode % 4) {
	case 0:
		text = fz_rest_str(&in, NULL);
		check_update(param, text);
		free(text);
		break;
	case 1:
		check_built(param, &in);
		break;
	case 2:
		check_reply(param, &in);
		break;
	default:
		check_utf16(param, &in);
		break;
	}
	return 0;
}

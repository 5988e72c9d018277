/*
 * agent_exec.c - the exec backend: runs the configured argv (no shell)
 * once per message, in a process group of its own.  stdin gets one JSON
 * object {session, platform, chat, user, text, history}; stdout is the
 * reply (made valid UTF-8).  The command gets a scrubbed environment (a
 * short allowlist plus what the config names in pass_env and env: never
 * the worker's tokens and keys) and no other descriptor.
 *
 * Everything goes through the event loop: non-blocking pipes read in
 * bounded chunks per callback, and the child's exit seen through a pidfd
 * (or a polling timer where pidfds are missing).  Once it has exited, and
 * before it is reaped (so its pid cannot be reused), its whole group is
 * killed: background processes it left behind do not pile up.  A timeout
 * or an output over max_output kills the group (SIGKILL) and the reply
 * says so; the reply is sent once the child is reaped.  A cancelled
 * call's group is killed and its child reaped in the background
 * ("orphans").  stderr keeps its first line and its last few KiB for
 * the error message; the rest is read and discarded.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent_impl.h"
#include "config.h"
#include "log.h"
#include "util.h"

extern char **environ;

#define EXEC_DEFAULT_TIMEOUT    60.0
#define EXEC_DEFAULT_MAX_OUTPUT (1024 * 1024)
#define EXEC_MAX_OUTPUT_LIMIT   (64.0 * 1024 * 1024)
#define EXEC_STDERR_LINE        200
#define EXEC_STDERR_TAIL        4096    /* the end of stderr kept for the message */
#define EXEC_READ_BUDGET        (256 * 1024)    /* bytes per pipe per callback */
#define EXEC_ENV_MAX            64      /* entries in pass_env, and in env */
#define EXEC_ENV_NAME_MAX       128
#define EXEC_ENV_VALUE_MAX      65536
#define EXEC_POLL_USEC          50000
#define EXEC_REAP_WAIT_MSEC     200     /* per killed child, at agent_free() */
#define EXEC_GRACE_USEC         200000  /* for stdout to end after the exit */
#define EXEC_UNREACHABLE        "the agent is unreachable: "

static const char *const exec_keys[] = { "command", "timeout", "max_output", "pass_env",
	"env", NULL };

/* What every command gets from the worker's environment, when set (LC_* too). */
static const char *const exec_env_allow[] = { "PATH", "HOME", "LANG", "TZ", "USER",
	"LOGNAME", "SHELL", "TMPDIR", "TERM" };

/* The service manager's protocol variables: the worker's alone, never passed. */
static const char *const exec_env_reserved[] = { "NOTIFY_SOCKET", "WATCHDOG_USEC",
	"WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES" };

struct exec_proc;

struct exec_backend {
	struct agent *a;
	char **argv;
	double timeout;
	size_t max_output;
	char **env;                     /* the command's environment, NAME=VALUE, owned */
	size_t nenv;
	struct exec_proc *procs;        /* children not reaped yet */
};

/* A child process, watched until it is reaped. */
struct exec_proc {
	struct exec_backend *x;
	pid_t pid;
	int pidfd;                      /* -1: polled with a timer */
	struct event *ev;
	struct exec_call *owner;        /* NULL once orphaned */
	int status;
	struct exec_proc *prev, *next;
};

struct exec_call {
	struct agent_call *c;
	struct exec_backend *x;
	struct exec_proc *proc;
	int in_fd, out_fd, err_fd;
	struct event *ev_in, *ev_out, *ev_err, *ev_timeout;
	char *input;
	size_t input_len, input_off;
	char *out;
	size_t out_len, out_cap;
	char err_line[EXEC_STDERR_LINE + 1];
	size_t err_len;
	int err_line_done;
	unsigned long long err_total;   /* stderr bytes read */
	unsigned long long err_first_end;       /* where the first line ended */
	char err_tail[EXEC_STDERR_TAIL];        /* a ring: the last bytes of stderr */
	int exited;
	int grace;                      /* exited; waiting briefly for stdout's end */
	int status;                     /* the wait status, once exited */
	char *fail;                     /* why the child was killed */
};

static void exec_proc_watch(struct exec_proc *p);
static void exec_maybe_finish(struct exec_call *ec);

/* Checks the command: a non-empty array of non-empty strings. */
static int
exec_conf_command(const cJSON *conf, char ***argv, char *err, size_t errlen)
{
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(conf, "command"), *it;
	int n, i = 0;

	if (cmd == NULL || cJSON_IsNull(cmd)) {
		snprintf(err, errlen, "agent.command: required for the exec backend "
		    "(an array of strings: program and arguments)");
		return -1;
	}
	if (!cJSON_IsArray(cmd) || (n = cJSON_GetArraySize(cmd)) == 0) {
		snprintf(err, errlen, "agent.command: must be a non-empty array of strings");
		return -1;
	}
	cJSON_ArrayForEach(it, cmd) {
		if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
			snprintf(err, errlen, "agent.command: element %d must be a non-empty string",
			    i);
			return -1;
		}
		i++;
	}
	*argv = xcalloc((size_t)n + 1, sizeof(char *));
	i = 0;
	cJSON_ArrayForEach(it, cmd)
		(*argv)[i++] = xstrdup(it->valuestring);
	return 0;
}

/* Frees a string that may hold a secret, wiping it first. */
static void
exec_env_wipe(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* Whether name is a plain variable name: a letter or _, then letters, digits, _. */
static int
exec_env_name_ok(const char *name)
{
	size_t i;

	if (name[0] == '\0' || strlen(name) > EXEC_ENV_NAME_MAX ||
	    (name[0] >= '0' && name[0] <= '9'))
		return 0;
	for (i = 0; name[i] != '\0'; i++) {
		char ch = name[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '_'))
			return 0;
	}
	return 1;
}

/* Checks a name given in agent.<key>; -1 with err set. */
static int
exec_env_check_name(const char *key, const char *name, char *err, size_t errlen)
{
	char esc[EXEC_ENV_NAME_MAX + 16];
	size_t i;

	if (!exec_env_name_ok(name)) {
		snprintf(err, errlen, "agent.%s: \"%s\" is not a variable name "
		    "(letters, digits and _, at most %d)", key,
		    log_escape(esc, sizeof(esc), name, strlen(name)), EXEC_ENV_NAME_MAX);
		return -1;
	}
	for (i = 0; i < ARRAY_LEN(exec_env_reserved); i++) {
		if (strcmp(name, exec_env_reserved[i]) == 0) {
			snprintf(err, errlen, "agent.%s: %s belongs to the worker's service "
			    "manager and is never passed to the command", key, name);
			return -1;
		}
	}
	return 0;
}

/* Sets NAME=VALUE in the command's environment, replacing an earlier NAME. */
static void
exec_env_set(struct exec_backend *x, const char *name, size_t namelen, const char *value)
{
	char *e = xasprintf("%.*s=%s", (int)namelen, name, value);
	size_t i;

	for (i = 0; i < x->nenv; i++) {
		if (strncmp(x->env[i], name, namelen) == 0 && x->env[i][namelen] == '=') {
			exec_env_wipe(x->env[i]);
			x->env[i] = e;
			return;
		}
	}
	x->env = xrealloc(x->env, (x->nenv + 2) * sizeof(char *));
	x->env[x->nenv++] = e;
	x->env[x->nenv] = NULL;
}

/* The allowlisted variables of the worker's own environment (PATH, HOME, LC_*, ...). */
static void
exec_env_inherit(struct exec_backend *x)
{
	char **e;
	size_t i;

	for (e = environ; *e != NULL; e++) {
		const char *eq = strchr(*e, '=');
		size_t n;
		int keep;

		if (eq == NULL)
			continue;
		n = (size_t)(eq - *e);
		keep = n > 3 && strncmp(*e, "LC_", 3) == 0;
		for (i = 0; i < ARRAY_LEN(exec_env_allow) && !keep; i++)
			keep = strlen(exec_env_allow[i]) == n && strncmp(*e, exec_env_allow[i], n) == 0;
		if (keep)
			exec_env_set(x, *e, n, eq + 1);
	}
}

/* pass_env: names whose values, looked up like every secret, the command gets. */
static int
exec_conf_pass_env(struct exec_backend *x, const cJSON *conf, char *err, size_t errlen)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(conf, "pass_env"), *it;

	if (list == NULL)
		return 0;
	if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) > EXEC_ENV_MAX) {
		snprintf(err, errlen, "agent.pass_env: must be an array of at most %d "
		    "variable names", EXEC_ENV_MAX);
		return -1;
	}
	cJSON_ArrayForEach(it, list) {
		char *v;

		if (!cJSON_IsString(it)) {
			snprintf(err, errlen, "agent.pass_env: every element must be a string "
			    "(a variable name)");
			return -1;
		}
		if (exec_env_check_name("pass_env", it->valuestring, err, errlen) < 0)
			return -1;
		if ((v = config_secret(it->valuestring)) == NULL) {
			log_warnx("agent.pass_env: %s is not set; the command runs without it",
			    it->valuestring);
			continue;
		}
		exec_env_set(x, it->valuestring, strlen(it->valuestring), v);
		exec_env_wipe(v);
	}
	return 0;
}

/* env: NAME: "value" pairs set for the command, over everything else. */
static int
exec_conf_env(struct exec_backend *x, const cJSON *conf, char *err, size_t errlen)
{
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(conf, "env"), *it;

	if (obj == NULL)
		return 0;
	if (!cJSON_IsObject(obj) || cJSON_GetArraySize(obj) > EXEC_ENV_MAX) {
		snprintf(err, errlen, "agent.env: must be an object of at most %d "
		    "\"NAME\": \"value\" pairs", EXEC_ENV_MAX);
		return -1;
	}
	cJSON_ArrayForEach(it, obj) {
		if (exec_env_check_name("env", it->string, err, errlen) < 0)
			return -1;
		if (!cJSON_IsString(it) || strlen(it->valuestring) > EXEC_ENV_VALUE_MAX) {
			snprintf(err, errlen, "agent.env: %s must be a string of at most %d bytes",
			    it->string, EXEC_ENV_VALUE_MAX);
			return -1;
		}
		exec_env_set(x, it->string, strlen(it->string), it->valuestring);
	}
	return 0;
}

static void exec_destroy(void *state);

static int
exec_create(struct agent *a, const cJSON *conf, void **state, char *err, size_t errlen)
{
	struct exec_backend *x = xcalloc(1, sizeof(*x));

	x->a = a;
	x->timeout = EXEC_DEFAULT_TIMEOUT;
	x->max_output = EXEC_DEFAULT_MAX_OUTPUT;
	x->env = xcalloc(1, sizeof(char *));
	if (conf == NULL) {
		snprintf(err, errlen, "agent.command: required for the exec backend");
		free(x);
		return -1;
	}
	if (exec_conf_command(conf, &x->argv, err, errlen) < 0 ||
	    agent_conf_seconds(conf, "timeout", 86400, &x->timeout, err, errlen) < 0 ||
	    agent_conf_uint(conf, "max_output", 1, EXEC_MAX_OUTPUT_LIMIT, &x->max_output,
	    err, errlen) < 0) {
		exec_destroy(x);
		return -1;
	}
	exec_env_inherit(x);
	if (exec_conf_pass_env(x, conf, err, errlen) < 0 ||
	    exec_conf_env(x, conf, err, errlen) < 0) {
		exec_destroy(x);
		return -1;
	}
	*state = x;
	return 0;
}

/*
 * Kills the command's process group: the command and whatever it left
 * behind (only processes that made a session or group of their own
 * escape).  Called while the child is unreaped, so the id is still its.
 */
static void
exec_kill_group(pid_t pid)
{
	if (pid > 1)
		kill(-pid, SIGKILL);
}

/* Frees a proc record (its child reaped or given up on). */
static void
exec_proc_free(struct exec_proc *p)
{
	struct exec_backend *x = p->x;

	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		x->procs = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	if (p->ev != NULL)
		event_free(p->ev);
	if (p->pidfd >= 0)
		close(p->pidfd);
	free(p);
}

static void
exec_destroy(void *state)
{
	struct exec_backend *x = state;
	char **a;

	if (x == NULL)
		return;
	/*
	 * Calls are cancelled first (agent_free), so only killed orphans
	 * remain.  At teardown each gets a short, bounded wait so that no
	 * zombie is left behind; one still there after it is left to init.
	 */
	while (x->procs != NULL) {
		struct exec_proc *p = x->procs;

		exec_kill_group(p->pid);
		if (p->pidfd >= 0) {
			struct pollfd pfd = { .fd = p->pidfd, .events = POLLIN };

			poll(&pfd, 1, EXEC_REAP_WAIT_MSEC);
		}
		waitpid(p->pid, NULL, WNOHANG);
		exec_proc_free(p);
	}
	for (a = x->argv; a != NULL && *a != NULL; a++)
		free(*a);
	free(x->argv);
	for (a = x->env; a != NULL && *a != NULL; a++)
		exec_env_wipe(*a);
	free(x->env);
	free(x);
}

/* The stdin document of one call (allocated). */
static char *
exec_input(const struct agent_req *req, size_t *len)
{
	cJSON *o = cJSON_CreateObject(), *h;
	char *s;

	if (o == NULL ||
	    cJSON_AddStringToObject(o, "session", req->session) == NULL ||
	    cJSON_AddStringToObject(o, "platform", req->platform) == NULL ||
	    cJSON_AddStringToObject(o, "chat", req->chat_id) == NULL ||
	    cJSON_AddStringToObject(o, "user", req->user_id) == NULL ||
	    cJSON_AddStringToObject(o, "text", req->text) == NULL)
		fatalx("out of memory building the exec input");
	h = req->history != NULL ? cJSON_Duplicate(req->history, 1) : cJSON_CreateArray();
	if (h == NULL || !cJSON_AddItemToObject(o, "history", h))
		fatalx("out of memory building the exec input");
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s == NULL)
		fatalx("out of memory building the exec input");
	*len = strlen(s);
	s = xrealloc(s, *len + 2);
	s[(*len)++] = '\n';
	s[*len] = '\0';
	return s;
}

/* Closes an fd and frees its event. */
static void
exec_close(int *fd, struct event **ev)
{
	if (*ev != NULL) {
		event_free(*ev);
		*ev = NULL;
	}
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Frees a call's state; an unreaped child is killed and left to reap as an orphan. */
static void
exec_call_free(struct exec_call *ec)
{
	if (ec == NULL)
		return;
	exec_close(&ec->in_fd, &ec->ev_in);
	exec_close(&ec->out_fd, &ec->ev_out);
	exec_close(&ec->err_fd, &ec->ev_err);
	if (ec->ev_timeout != NULL)
		event_free(ec->ev_timeout);
	if (ec->proc != NULL) {
		exec_kill_group(ec->proc->pid);
		ec->proc->owner = NULL;
	}
	free(ec->input);
	free(ec->out);
	free(ec->fail);
	free(ec);
}

/*
 * Kills the child for a reason and stops reading; the reply is sent by
 * exec_maybe_finish() once the child is reaped.
 */
static void
exec_kill(struct exec_call *ec, const char *why)
{
	if (ec->fail == NULL)
		ec->fail = xstrdup(why);
	if (ec->proc != NULL)
		exec_kill_group(ec->proc->pid);
	exec_close(&ec->in_fd, &ec->ev_in);
	exec_close(&ec->out_fd, &ec->ev_out);
	exec_close(&ec->err_fd, &ec->ev_err);
}

/* Feeds the child's stdin. */
static void
exec_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct exec_call *ec = arg;
	ssize_t n;

	(void)what;
	while (ec->input_off < ec->input_len) {
		n = write(fd, ec->input + ec->input_off, ec->input_len - ec->input_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
			break;          /* EPIPE: the command does not read its input */
		ec->input_off += (size_t)n;
	}
	exec_close(&ec->in_fd, &ec->ev_in);
}

/*
 * Reads what the child's stdout has, up to max_output and at most budget
 * bytes per call (the loop is never held by one pipe: a level-triggered
 * event brings the rest); closes it at EOF.
 */
static void
exec_read_out(struct exec_call *ec, size_t budget)
{
	char buf[16384];
	size_t got = 0;
	ssize_t n;

	while (ec->out_fd >= 0 && got < budget) {
		n = read(ec->out_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			exec_close(&ec->out_fd, &ec->ev_out);
			return;
		}
		got += (size_t)n;
		if ((size_t)n > ec->x->max_output - ec->out_len) {
			char why[128];

			snprintf(why, sizeof(why), "the command's output exceeded %zu bytes",
			    ec->x->max_output);
			exec_kill(ec, why);
			return;
		}
		if (ec->out_len + (size_t)n + 1 > ec->out_cap) {
			ec->out_cap = (ec->out_len + (size_t)n + 1) * 2;
			ec->out = xrealloc(ec->out, ec->out_cap);
		}
		memcpy(ec->out + ec->out_len, buf, (size_t)n);
		ec->out_len += (size_t)n;
		ec->out[ec->out_len] = '\0';
	}
}

static void
exec_read_out_cb(evutil_socket_t fd, short what, void *arg)
{
	struct exec_call *ec = arg;

	(void)fd;
	(void)what;
	exec_read_out(ec, EXEC_READ_BUDGET);
	exec_maybe_finish(ec);          /* last: it may free ec */
}

/* Keeps what stderr brought: its first line, and its last bytes in a ring. */
static void
exec_keep_err(struct exec_call *ec, const char *buf, size_t n)
{
	size_t i, at, first;

	for (i = 0; i < n && !ec->err_line_done; i++) {
		if (buf[i] == '\n' && ec->err_len > 0) {
			ec->err_line_done = 1;
			ec->err_first_end = ec->err_total + i;
		} else if (buf[i] != '\n' && buf[i] != '\r' && ec->err_len < EXEC_STDERR_LINE) {
			ec->err_line[ec->err_len++] = buf[i];
		}
	}
	if (n > EXEC_STDERR_TAIL) {
		ec->err_total += n - EXEC_STDERR_TAIL;
		buf += n - EXEC_STDERR_TAIL;
		n = EXEC_STDERR_TAIL;
	}
	at = (size_t)(ec->err_total % EXEC_STDERR_TAIL);
	first = n < EXEC_STDERR_TAIL - at ? n : EXEC_STDERR_TAIL - at;
	memcpy(ec->err_tail + at, buf, first);
	memcpy(ec->err_tail, buf + first, n - first);
	ec->err_total += n;
}

/*
 * Reads what the child's stderr has, at most budget bytes per call, and
 * keeps only what the message needs; closes it at EOF.
 */
static void
exec_read_err(struct exec_call *ec, size_t budget)
{
	char buf[16384];
	size_t got = 0;
	ssize_t n;

	while (ec->err_fd >= 0 && got < budget) {
		n = read(ec->err_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			exec_close(&ec->err_fd, &ec->ev_err);
			return;
		}
		got += (size_t)n;
		exec_keep_err(ec, buf, (size_t)n);
	}
}

static void
exec_read_err_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	exec_read_err(arg, EXEC_READ_BUDGET);
}

/* The whole-call deadline. */
static void
exec_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct exec_call *ec = arg;
	char why[128];

	(void)fd;
	(void)what;
	if (ec->grace) {
		/* A process the command left behind holds stdout: reply with what came. */
		exec_close(&ec->out_fd, &ec->ev_out);
		exec_close(&ec->err_fd, &ec->ev_err);
		exec_maybe_finish(ec);
		return;
	}
	snprintf(why, sizeof(why), "the command timed out after %g s", ec->x->timeout);
	exec_kill(ec, why);
	exec_maybe_finish(ec);          /* last: it may free ec */
}

/*
 * The last non-empty line of stderr's kept tail, escaped into out; ""
 * when there is none besides the first line.
 */
static void
exec_err_last_line(const struct exec_call *ec, char *out, size_t outlen)
{
	char tail[EXEC_STDERR_TAIL], line[EXEC_STDERR_LINE];
	size_t n = ec->err_total < EXEC_STDERR_TAIL ? (size_t)ec->err_total : EXEC_STDERR_TAIL;
	unsigned long long base = ec->err_total - n;
	size_t i, b, end, len = 0;

	out[0] = '\0';
	for (i = 0; i < n; i++)
		tail[i] = ec->err_tail[(base + i) % EXEC_STDERR_TAIL];
	for (end = n; end > 0 && (tail[end - 1] == '\n' || tail[end - 1] == '\r'); end--)
		;
	for (b = end; b > 0 && tail[b - 1] != '\n'; b--)
		;
	if (end == 0 || !ec->err_line_done || base + b <= ec->err_first_end)
		return;
	for (i = b; i < end && len < sizeof(line); i++)
		if (tail[i] != '\r')
			line[len++] = tail[i];
	log_escape(out, outlen, line, len);
}

/* Describes how the child ended into buf ("" when it exited with 0). */
static void
exec_describe_status(struct exec_call *ec, char *buf, size_t len)
{
	char line[EXEC_STDERR_LINE * 4 + 1], last[EXEC_STDERR_LINE * 4 + 1];
	char said[sizeof(line) + sizeof(last) + 8];
	int st = ec->status;

	buf[0] = '\0';
	log_escape(line, sizeof(line), ec->err_line, ec->err_len);
	exec_err_last_line(ec, last, sizeof(last));
	/* What stderr said: its first line, and its last when that differs. */
	snprintf(said, sizeof(said), "%s%s%s%s", line[0] ? ": " : "", line,
	    last[0] ? " ... " : "", last);
	if (WIFSIGNALED(st))
		snprintf(buf, len, "the command was killed by signal %d (%s)%s",
		    WTERMSIG(st), strsignal(WTERMSIG(st)), said);
	else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
		snprintf(buf, len, "the command exited with status %d%s",
		    WEXITSTATUS(st), said);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when invalid. */
static size_t
exec_utf8_seq(const unsigned char *s, size_t n)
{
	size_t len, i;
	unsigned cp;

	if (s[0] > 0 && s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;               /* NUL, a continuation byte, or never valid */
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/*
 * The command's output as a reply: valid UTF-8 (invalid bytes and NULs
 * become U+FFFD), since every platform and the console's JSON need it.
 */
static char *
exec_utf8_clean(const char *out, size_t len)
{
	const unsigned char *s = (const unsigned char *)out;
	char *r = xmalloc(len * 3 + 1), *p = r;
	size_t i = 0, k;

	while (i < len) {
		k = exec_utf8_seq(s + i, len - i);
		if (k == 0) {
			memcpy(p, "\xef\xbf\xbd", 3);
			p += 3;
			i++;
		} else {
			memcpy(p, s + i, k);
			p += k;
			i += k;
		}
	}
	*p = '\0';
	return r;
}

/* Replies once the child is reaped and its output read (or it was killed). */
static void
exec_maybe_finish(struct exec_call *ec)
{
	struct agent_call *c = ec->c;
	char why[EXEC_STDERR_LINE * 8 + 200];
	char *msg;
	int ok = 0;

	if (!ec->exited || (ec->fail == NULL && ec->out_fd >= 0))
		return;
	if (ec->fail != NULL) {
		msg = xasprintf(EXEC_UNREACHABLE "%s", ec->fail);
	} else {
		exec_describe_status(ec, why, sizeof(why));
		while (ec->out_len > 0 && (ec->out[ec->out_len - 1] == '\n' ||
		    ec->out[ec->out_len - 1] == '\r'))
			ec->out[--ec->out_len] = '\0';
		if (why[0] != '\0') {
			msg = xasprintf(EXEC_UNREACHABLE "%s", why);
		} else if (ec->out_len == 0 || strspn(ec->out, " \t\r\n") == ec->out_len) {
			msg = xstrdup(EXEC_UNREACHABLE "the command gave no output");
		} else {
			msg = exec_utf8_clean(ec->out, ec->out_len);
			ok = 1;
		}
	}
	if (!ok)
		log_warnx("agent: %s", msg);
	c->impl = NULL;
	exec_call_free(ec);
	agent_call_done_later(c, ok, msg);
	free(msg);
}

/*
 * Reaps the child if it has exited, after killing its group: until the
 * child is reaped its pid, and so the group's id, cannot be reused.
 * Returns 1 when reaped.
 */
static int
exec_proc_reap(struct exec_proc *p)
{
	siginfo_t si;
	int st = 0, r;
	pid_t w;

	memset(&si, 0, sizeof(si));
	do
		r = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT);
	while (r < 0 && errno == EINTR);
	if (r == 0 && si.si_pid == 0)
		return 0;
	exec_kill_group(p->pid);
	do
		w = waitpid(p->pid, &st, WNOHANG);
	while (w < 0 && errno == EINTR);
	/* ECHILD: someone else reaped it (SIGCHLD ignored); the status is lost. */
	p->status = w == p->pid ? st : 0;
	return 1;
}

/* The child may have exited: reap it and tell its call. */
static void
exec_proc_cb(evutil_socket_t fd, short what, void *arg)
{
	struct exec_proc *p = arg;
	struct exec_call *ec = p->owner;
	int status;

	(void)fd;
	(void)what;
	if (!exec_proc_reap(p)) {
		exec_proc_watch(p);     /* not gone yet: keep watching */
		return;
	}
	status = p->status;
	exec_proc_free(p);
	if (ec == NULL)
		return;                 /* an orphan: its call was cancelled */
	ec->proc = NULL;
	ec->exited = 1;
	ec->status = status;
	/*
	 * The child and its group are gone: what is left in the pipes (a
	 * pipe's worth at most, unless an escaped process still writes) is
	 * read now.
	 */
	exec_read_out(ec, EXEC_READ_BUDGET);
	exec_read_err(ec, EXEC_READ_BUDGET);
	if (ec->out_fd >= 0 && ec->fail == NULL) {
		static const struct timeval grace = { 0, EXEC_GRACE_USEC };

		ec->grace = 1;
		evtimer_add(ec->ev_timeout, &grace);
	}
	exec_maybe_finish(ec);          /* last: it may free ec */
}

/* Arms the exit watch: the pidfd, or the next poll. */
static void
exec_proc_watch(struct exec_proc *p)
{
	static const struct timeval poll_tv = { 0, EXEC_POLL_USEC };

	if (p->ev == NULL) {
		p->ev = p->pidfd >= 0 ?
		    event_new(p->x->a->base, p->pidfd, EV_READ, exec_proc_cb, p) :
		    evtimer_new(p->x->a->base, exec_proc_cb, p);
		if (p->ev == NULL)
			fatalx("cannot create an event");
	}
	event_add(p->ev, p->pidfd >= 0 ? NULL : &poll_tv);
}

/* Spawns the command with the three pipe ends as its stdio. */
static int
exec_spawn(struct exec_backend *x, int in_r, int out_w, int err_w, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	int r;

	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_r, STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, err_w, STDERR_FILENO);
	/* Nothing of the worker's (sockets, files) leaks into the command. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&attr);
	/* Default signal dispositions (the worker ignores SIGPIPE) and no mask. */
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	/* A group of its own, killed as a whole once the command is done. */
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
	    POSIX_SPAWN_SETPGROUP);
	r = posix_spawnp(pid, x->argv[0], &fa, &attr, x->argv, x->env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return r;
}

/* Makes a pipe: the parent's end non-blocking, both close-on-exec. */
static int
exec_pipe(int fds[2], int parent_end)
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	fd_set_nonblock(fds[parent_end], 1);
	return 0;
}

/* Creates the events of a started call. */
static void
exec_add_events(struct exec_call *ec)
{
	struct event_base *base = ec->x->a->base;
	struct timeval tv;

	ec->ev_in = event_new(base, ec->in_fd, EV_WRITE | EV_PERSIST, exec_write_cb, ec);
	ec->ev_out = event_new(base, ec->out_fd, EV_READ | EV_PERSIST, exec_read_out_cb, ec);
	ec->ev_err = event_new(base, ec->err_fd, EV_READ | EV_PERSIST, exec_read_err_cb, ec);
	ec->ev_timeout = evtimer_new(base, exec_timeout_cb, ec);
	if (ec->ev_in == NULL || ec->ev_out == NULL || ec->ev_err == NULL ||
	    ec->ev_timeout == NULL)
		fatalx("cannot create an event");
	event_add(ec->ev_in, NULL);
	event_add(ec->ev_out, NULL);
	event_add(ec->ev_err, NULL);
	tv.tv_sec = (time_t)ec->x->timeout;
	tv.tv_usec = (suseconds_t)((ec->x->timeout - (double)tv.tv_sec) * 1e6);
	evtimer_add(ec->ev_timeout, &tv);
}

/* Registers the child for reaping. */
static struct exec_proc *
exec_proc_new(struct exec_backend *x, struct exec_call *ec, pid_t pid)
{
	struct exec_proc *p = xcalloc(1, sizeof(*p));

	p->x = x;
	p->pid = pid;
	p->owner = ec;
	p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (p->pidfd >= 0)
		fd_set_cloexec(p->pidfd, 1);
	p->next = x->procs;
	if (x->procs != NULL)
		x->procs->prev = p;
	x->procs = p;
	exec_proc_watch(p);
	return p;
}

static int
exec_start(struct agent_call *c, char *err, size_t errlen)
{
	struct exec_backend *x = c->a->state;
	struct exec_call *ec;
	int in[2], out[2], errp[2], r;
	pid_t pid;

	if (exec_pipe(in, 1) < 0)
		goto pipe_fail;
	if (exec_pipe(out, 0) < 0) {
		close(in[0]);
		close(in[1]);
		goto pipe_fail;
	}
	if (exec_pipe(errp, 0) < 0) {
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		goto pipe_fail;
	}
	r = exec_spawn(x, in[0], out[1], errp[1], &pid);
	close(in[0]);
	close(out[1]);
	close(errp[1]);
	if (r != 0) {
		close(in[1]);
		close(out[0]);
		close(errp[0]);
		snprintf(err, errlen, EXEC_UNREACHABLE "cannot run %s: %s", x->argv[0],
		    strerror(r));
		log_warnx("agent: %s", err);
		return -1;
	}
	ec = xcalloc(1, sizeof(*ec));
	ec->c = c;
	ec->x = x;
	ec->in_fd = in[1];
	ec->out_fd = out[0];
	ec->err_fd = errp[0];
	ec->input = exec_input(&c->req, &ec->input_len);
	c->impl = ec;
	exec_add_events(ec);
	ec->proc = exec_proc_new(x, ec, pid);
	return 0;

pipe_fail:
	snprintf(err, errlen, EXEC_UNREACHABLE "cannot create a pipe: %s", strerror(errno));
	log_warnx("agent: %s", err);
	return -1;
}

static void
exec_cancel(struct agent_call *c)
{
	exec_call_free(c->impl);
	c->impl = NULL;
}

const struct agent_backend agent_exec_backend = {
	.name = "exec",
	.keys = exec_keys,
	.create = exec_create,
	.destroy = exec_destroy,
	.start = exec_start,
	.cancel = exec_cancel,
};

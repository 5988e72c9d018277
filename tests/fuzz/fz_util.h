/*
 * fz_util.h - what every fuzz target shares: the libFuzzer entry points,
 * an invariant check that aborts (libFuzzer then keeps the input), a
 * reader of the fuzzer's bytes, one scratch directory per process, and
 * a few checkers (UTF-8, white space) that the invariants use.
 */
#ifndef HERMES_FZ_UTIL_H
#define HERMES_FZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* fz_util.c has a default (fz_setup() only); a harness may define its own. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Fails the input: prints where and why, then aborts (a crash to libFuzzer). */
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), noreturn));
#define FZ_CHECK(cond, ...) \
	do { if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

/* Reads the fuzzer's bytes from the front; past the end every read gives zeros. */
struct fz_in {
	const uint8_t *p;
	size_t n;
};
uint8_t fz_u8(struct fz_in *in);
uint16_t fz_u16(struct fz_in *in);
uint32_t fz_u32(struct fz_in *in);
/* Takes up to max bytes (fewer at the end); *len says how many. */
const uint8_t *fz_take(struct fz_in *in, size_t max, size_t *len);
/* A newly allocated NUL-terminated string of up to max bytes, cut at a NUL. */
char *fz_str(struct fz_in *in, size_t max);
/* The rest as a newly allocated NUL-terminated string (cut at a NUL; *len its length). */
char *fz_rest_str(struct fz_in *in, size_t *len);
/*
 * Splits the rest at "\n%%\n" into at most n parts (missing parts are
 * empty): the corpus of multi-file targets stays readable text.
 * Returns the number of parts found; part[i] points into the input.
 */
size_t fz_split(struct fz_in *in, const uint8_t **part, size_t *len, size_t n);

/* A small deterministic generator (xorshift64*), seeded from bytes. */
uint64_t fz_seed(const uint8_t *data, size_t size);
uint64_t fz_rand(uint64_t *state);

/*
 * The process's scratch directory (under /dev/shm when it exists, so that
 * fsync costs nothing), created on first use and removed at exit.
 */
const char *fz_tmpdir(void);
/* A subdirectory of it, created on first use. */
char *fz_subdir(const char *name);
/* Removes every file in dir (not recursive; subdirectories are kept). */
void fz_clear_dir(const char *dir);
/* Writes dir/name (mode 0600 unless mode says otherwise); aborts on failure. */
void fz_write(const char *dir, const char *name, const void *data, size_t len, unsigned mode);
/* Reads dir/name; NULL when absent. */
char *fz_read(const char *dir, const char *name, size_t *len);

/* Sends the project's log to /dev/null unless FUZZ_LOG is set; ignores SIGPIPE. */
void fz_setup(void);

/*
 * A model of a bounded set of strings that forgets its oldest member
 * beyond cap (0: unbounded), as the handled-id sets do.
 */
struct fz_set {
	char **v;                       /* oldest first */
	size_t n, cap;
};
int fz_set_has(const struct fz_set *s, const char *id);
/* Adds id unless present; returns 1 when added. */
int fz_set_add(struct fz_set *s, const char *id);
void fz_set_free(struct fz_set *s);

/* Prints to stderr when FUZZ_TRACE is set: what a harness did with an input. */
void fz_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 1 when s[0..len) is strict UTF-8 (no overlongs, surrogates or NULs). */
int fz_utf8_valid(const char *s, size_t len);
/* 1 when s is a whole decimal integer (optionally signed). */
int fz_is_int(const char *s);
/* The white space text_split() drops: space, \t, \n, \v, \f, \r. */
int fz_is_space(unsigned char c);

#endif

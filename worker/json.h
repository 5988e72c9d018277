/*
 * json.h - the getters every platform uses on cJSON trees it did not
 * build: a missing key and a value of the wrong type read the same (NULL,
 * or -1), so a parser checks once.
 */
#ifndef HERMES_JSON_H
#define HERMES_JSON_H

#include <stdint.h>

#include <cjson/cJSON.h>

/* The string under key, or NULL. */
const char *json_str(const cJSON *o, const char *key);
/* The object (array) under key, or NULL. */
const cJSON *json_obj(const cJSON *o, const char *key);
const cJSON *json_arr(const cJSON *o, const char *key);
/* 1 for true, 0 for false, -1 when missing or not a boolean. */
int json_bool(const cJSON *o, const char *key);
/*
 * An integer under key, a JSON number or a decimal string (as platforms
 * send ids), within [min, max].  Returns 0, or -1 when missing or not one.
 */
int json_i64(const cJSON *o, const char *key, int64_t min, int64_t max, int64_t *out);
/* A number under key; -1 when missing or not a number. */
int json_num(const cJSON *o, const char *key, double *out);

#endif

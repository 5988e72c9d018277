/* json.c - getters on cJSON trees from outside (see json.h). */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

const char *
json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

const cJSON *
json_obj(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsObject(v) ? v : NULL;
}

const cJSON *
json_arr(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsArray(v) ? v : NULL;
}

int
json_bool(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

int
json_i64(const cJSON *o, const char *key, int64_t min, int64_t max, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	long long n;
	char *end;

	if (cJSON_IsNumber(v)) {
		/* only integers that a double holds exactly */
		if (!isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble) ||
		    fabs(v->valuedouble) > 9007199254740992.0)
			return -1;
		n = (long long)v->valuedouble;
	} else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
		errno = 0;
		n = strtoll(v->valuestring, &end, 10);
		if (errno != 0 || *end != '\0')
			return -1;
	} else
		return -1;
	if (n < min || n > max)
		return -1;
	*out = n;
	return 0;
}

int
json_num(const cJSON *o, const char *key, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
		return -1;
	*out = v->valuedouble;
	return 0;
}

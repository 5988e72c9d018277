/* platform.c - platform state names and the lookup in the platform table. */
#include "platform.h"

#include <string.h>

const char *
plat_state_name(enum plat_state st)
{
	switch (st) {
	case PLAT_STOPPED:
		return "stopped";
	case PLAT_CONNECTING:
		return "connecting";
	case PLAT_UP:
		return "up";
	case PLAT_BACKOFF:
		return "backoff";
	case PLAT_UNAUTHORIZED:
		return "unauthorized";
	}
	return "unknown";
}

const struct platform_ops *
platform_find(const char *name)
{
	const struct platform_ops *const *p;

	if (name == NULL)
		return NULL;
	for (p = platform_table; *p != NULL; p++)
		if (strcmp((*p)->name, name) == 0)
			return *p;
	return NULL;
}

/*
 * console_page.h - the web console page served at GET / (embedded HTML,
 * CSS and JavaScript; no external resources).
 */
#ifndef HERMES_CONSOLE_PAGE_H
#define HERMES_CONSOLE_PAGE_H

#include <stddef.h>

extern const char console_page_html[];
extern const size_t console_page_len;

#endif

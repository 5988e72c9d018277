/*
 * weixin_login.h - `hermes-worker login weixin`: the iLink QR login, a
 * small blocking program of its own (its own event loop, run before and
 * instead of the gateway).
 *
 * It asks get_bot_qrcode for a code, draws it in the terminal (and prints
 * its link), polls get_qrcode_status (following an IDC redirect to the
 * host it names, fetching a new code when one expires, asking for the
 * verification code when WeChat shows one) and, once the login is
 * confirmed, writes $HERMES_HOME/weixin/accounts/<account>.json (mode
 * 0600) in the Python gateway's format.  The worker reads that file when
 * no token is configured.
 */
#ifndef HERMES_WEIXIN_LOGIN_H
#define HERMES_WEIXIN_LOGIN_H

#include <stdio.h>

/*
 * argv[0] is "weixin"; options: -c/--config FILE (for tls.ca_file and
 * platforms.weixin.base_url), --base-url URL, --timeout SECONDS.  Returns
 * the exit status: 0 logged in, 1 failed, 78 bad usage or configuration.
 */
int weixin_login_main(int argc, char **argv);

/*
 * Draws text as a QR code on f with Unicode half blocks, two modules a
 * character cell, light modules as blocks (for a dark terminal), a quiet
 * zone around.  Returns 0, or -1 when it cannot be encoded.
 */
int weixin_login_draw(FILE *f, const char *text);

#endif

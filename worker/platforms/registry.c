/*
 * registry.c - the table of every platform the worker knows.
 *
 * Adding a platform: one file pair in worker/platforms/ exporting its
 * struct platform_ops, and one line here.
 */
#include "platform.h"
#include "platforms/console.h"
#include "platforms/discord.h"
#include "platforms/feishu.h"
#include "platforms/homeassistant.h"
#include "platforms/qqbot.h"
#include "platforms/slack.h"
#include "platforms/telegram.h"
#include "platforms/weixin.h"

const struct platform_ops *const platform_table[] = {
	&console_ops,
	&discord_ops,
	&feishu_ops,
	&homeassistant_ops,
	&qqbot_ops,
	&slack_ops,
	&telegram_ops,
	&weixin_ops,
	NULL,
};

"""The strings readers see on the web pages and in transactional email, in English and Chinese.

Pure functions: ``pick_lang`` chooses a language from the visitor's ``Accept-Language`` header
(its most preferred language we speak) and falls back to the newsletter's ``lang``;
``translator(lang)`` gives a ``t(key, **values)`` function for that language.
"""

from __future__ import annotations

from collections.abc import Callable

# Primary language subtag -> the tag we put in <html lang> and Content-Language.
SUPPORTED = {"en": "en", "zh": "zh-CN"}
DEFAULT = "en"

EN: dict[str, str] = {
    "subscribe.title": "Subscribe to {name}",
    "subscribe.intro": "Get each edition by email. Every email has a one-click unsubscribe link.",
    "subscribe.email": "Email address",
    "subscribe.name": "Name (optional)",
    "subscribe.lists": "Lists",
    "subscribe.honeypot": "Leave this field empty",
    "subscribe.button": "Subscribe",
    "subscribe.none": "There are no lists open for sign-up at the moment.",
    "subscribe.err_email": "Please enter a valid email address.",
    "subscribe.err_list": "Please choose at least one list.",
    "subscribe.err_unknown_list": "There is no list called “{list}” open for sign-up.",
    "subscribe.err_name": "Please shorten the name (at most 200 characters).",
    "check.title": "Check your inbox",
    "check.body": "If {email} can receive mail from us, a confirmation link is on its way. "
                  "Open it within {hours} hours to start your subscription. "
                  "If you are already subscribed, nothing changes.",
    "subscribed.title": "Thank you for subscribing",
    "subscribed.body": "If {email} can receive mail from us, the next edition of {name} will arrive there. "
                       "(An address that unsubscribed before gets a confirmation link first.)",
    "confirmed.title": "Subscription confirmed",
    "confirmed.body": "Thank you. {email} will receive {lists}.",
    "limited.title": "Too many requests",
    "limited.body": "Please wait a while and try again.",
    "bad_link.title": "This link is not valid",
    "bad_link.body": "The link may be incomplete, expired or mistyped. Use the most recent link "
                     "from your email, or subscribe again.",
    "not_found.title": "Page not found",
    "not_found.body": "There is nothing at this address.",
    "bad_request.title": "Bad request",
    "busy.title": "Please try again in a moment",
    "busy.body": "We could not record this just now, so nothing has changed yet. Please try again in a minute.",
    "unsubscribe.title": "Unsubscribe",
    "unsubscribe.question_list": "Stop sending {list} to {email}?",
    "unsubscribe.question_all": "Stop sending every email from {name} to {email}?",
    "unsubscribe.button": "Unsubscribe",
    "unsubscribe.manage": "Change your preferences instead",
    "unsubscribed.title": "You are unsubscribed",
    "unsubscribed.body_list": "{email} will no longer receive {list}.",
    "unsubscribed.body_all": "{email} will no longer receive email from {name}.",
    "unsubscribed.again": "Changed your mind? You can subscribe again at any time.",
    "prefs.title": "Your subscription",
    "prefs.intro": "Settings for {email}.",
    "prefs.lists": "Send me",
    "prefs.name": "Name",
    "prefs.save": "Save preferences",
    "prefs.saved": "Your preferences have been saved.",
    "prefs.unsub_all": "Unsubscribe from everything",
    "prefs.download": "Download my data (JSON)",
    "prefs.no_lists": "There are no lists to choose from.",
    "prefs.unsubscribed_note": "You are currently unsubscribed from everything; choosing lists "
                               "and saving subscribes you again.",
    "use_email.title": "Use the link in your email",
    "use_email.body": "To unsubscribe or change your preferences, use the link at the bottom of "
                      "any email you received from us. It is personal to you, so the web "
                      "version does not show it.",
    "archive.title": "{name}: archive",
    "archive.empty": "No editions yet.",
    "archive.feed": "Atom feed",
    "archive.subscribe": "Subscribe",
    "web.name_fallback": "reader",
    "web.email_neutral": "your email address",
    "mail.hello": "Hello {name},",
    "mail.hello_anon": "Hello,",
    "mail.confirm_subject": "Confirm your subscription to {name}",
    "mail.confirm_body": "Someone, hopefully you, asked to receive {lists} at this address. "
                         "To confirm, open this link within {hours} hours:",
    "mail.confirm_button": "Confirm my subscription",
    "mail.confirm_ignore": "If it was not you, ignore this email: without confirmation we send nothing more.",
    "mail.welcome_subject": "Welcome to {name}",
    "mail.welcome_body": "You are subscribed to {lists}. The next edition will arrive in this inbox.",
    "mail.manage": "Change your preferences or unsubscribe:",
    "mail.archive": "Past editions:",
    "list_sep": ", ",
}

ZH: dict[str, str] = {
    "subscribe.title": "订阅《{name}》",
    "subscribe.intro": "每期内容通过电子邮件送达。每封邮件都带有一键退订链接。",
    "subscribe.email": "电子邮件地址",
    "subscribe.name": "称呼（可选）",
    "subscribe.lists": "订阅列表",
    "subscribe.honeypot": "请勿填写此项",
    "subscribe.button": "订阅",
    "subscribe.none": "目前没有开放订阅的列表。",
    "subscribe.err_email": "请输入有效的电子邮件地址。",
    "subscribe.err_list": "请至少选择一个列表。",
    "subscribe.err_unknown_list": "没有名为“{list}”的开放订阅列表。",
    "subscribe.err_name": "称呼太长了（最多 200 个字符）。",
    "check.title": "请查收确认邮件",
    "check.body": "如果 {email} 能收到我们的邮件，确认链接已在路上。请在 {hours} 小时内打开它以开始订阅。"
                  "如果你已经订阅，则一切不变。",
    "subscribed.title": "感谢订阅",
    "subscribed.body": "如果 {email} 能收到我们的邮件，下一期《{name}》将发送到这个地址。"
                       "（曾经退订的地址会先收到一封确认邮件。）",
    "confirmed.title": "订阅已确认",
    "confirmed.body": "谢谢！{email} 将收到{lists}。",
    "limited.title": "请求过于频繁",
    "limited.body": "请稍后再试。",
    "bad_link.title": "链接无效",
    "bad_link.body": "链接可能不完整、已过期或有误。请使用邮件中最新的链接，或重新订阅。",
    "not_found.title": "页面不存在",
    "not_found.body": "这个地址没有内容。",
    "bad_request.title": "请求有误",
    "busy.title": "请稍后再试",
    "busy.body": "我们暂时无法记录这次操作，所以尚未生效。请过一分钟再试一次。",
    "unsubscribe.title": "退订",
    "unsubscribe.question_list": "不再向 {email} 发送{list}？",
    "unsubscribe.question_all": "不再向 {email} 发送《{name}》的任何邮件？",
    "unsubscribe.button": "确认退订",
    "unsubscribe.manage": "改为管理订阅偏好",
    "unsubscribed.title": "已退订",
    "unsubscribed.body_list": "{email} 将不再收到{list}。",
    "unsubscribed.body_all": "{email} 将不再收到《{name}》的邮件。",
    "unsubscribed.again": "改变主意了？随时可以重新订阅。",
    "prefs.title": "订阅偏好",
    "prefs.intro": "{email} 的设置。",
    "prefs.lists": "我想收到",
    "prefs.name": "称呼",
    "prefs.save": "保存偏好",
    "prefs.saved": "偏好已保存。",
    "prefs.unsub_all": "退订全部",
    "prefs.download": "下载我的数据（JSON）",
    "prefs.no_lists": "没有可选择的列表。",
    "prefs.unsubscribed_note": "你目前已退订全部内容；选择列表并保存即可重新订阅。",
    "use_email.title": "请使用邮件中的链接",
    "use_email.body": "如需退订或修改订阅偏好，请使用我们发给你的任一封邮件底部的链接。"
                      "该链接仅属于你本人，因此网页版不显示它。",
    "archive.title": "《{name}》往期",
    "archive.empty": "暂无往期内容。",
    "archive.feed": "Atom 订阅源",
    "archive.subscribe": "订阅",
    "web.name_fallback": "读者",
    "web.email_neutral": "你的邮箱",
    "mail.hello": "{name}，你好：",
    "mail.hello_anon": "你好：",
    "mail.confirm_subject": "请确认订阅《{name}》",
    "mail.confirm_body": "有人（希望是你）请求在这个地址接收{lists}。请在 {hours} 小时内打开以下链接确认：",
    "mail.confirm_button": "确认订阅",
    "mail.confirm_ignore": "如果不是你本人操作，请忽略本邮件：未经确认，我们不会再发送任何邮件。",
    "mail.welcome_subject": "欢迎订阅《{name}》",
    "mail.welcome_body": "你已订阅{lists}。下一期将发送到这个邮箱。",
    "mail.manage": "修改订阅偏好或退订：",
    "mail.archive": "往期内容：",
    "list_sep": "、",
}

CATALOGS = {"en": EN, "zh-CN": ZH}


def normalize_lang(tag: str | None) -> str | None:
    """The supported tag for a language tag (``zh-Hans-CN`` -> ``zh-CN``), or None."""
    if not tag:
        return None
    primary = tag.strip().split("-")[0].split("_")[0].lower()
    return SUPPORTED.get(primary)


def parse_accept_language(header: str) -> list[str]:
    """Language ranges of an ``Accept-Language`` header, most preferred first (q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):  # a bound against absurd headers
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if tag and q > 0:
            ranked.append((-q, index, tag.strip()))
    return [tag for _, _, tag in sorted(ranked)]


def pick_lang(default: str, accept_language: str | None = None) -> str:
    """The visitor's most preferred language we speak, else the newsletter's, else English."""
    for tag in parse_accept_language(accept_language or ""):
        found = normalize_lang(tag)
        if found:
            return found
    return normalize_lang(default) or DEFAULT


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)``: the string for ``key`` in ``lang`` (English when missing)."""
    catalog = CATALOGS.get(normalize_lang(lang) or DEFAULT, EN)

    def t(key: str, **values: object) -> str:
        text = catalog.get(key) or EN[key]
        return text.format(**values) if values else text

    return t


def quote_list_names(names: list[str], lang: str) -> str:
    """List names joined for a sentence: “A”, “B” in English, 《A》、《B》 in Chinese."""
    if (normalize_lang(lang) or DEFAULT) == "zh-CN":
        return "、".join(f"《{n}》" for n in names)
    return ", ".join(f"“{n}”" for n in names)

"""ANSI escape codes in log text: SGR colours become CSS class names, every
other escape sequence is removed. Pure functions, no HTML: the caller escapes
the text (templates autoescape; the viewer's JS uses textContent).

Class names are generated here from numbers only (a-fg1, a-bg4, a-b …), never
from log content, so they are safe to put in a class attribute.
"""

import re
from dataclasses import dataclass, replace

# CSI (ESC [ or the 8-bit C1 form), OSC/DCS/SOS/PM/APC strings up to their
# terminator, two-byte ESC sequences, and a lone ESC.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)(?P<params>[0-?]*)(?P<inter>[ -/]*)(?P<final>[@-~])"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b",
    re.DOTALL,
)
# C0 controls other than tab, and DEL: shown as their Unicode "control
# pictures" so that a NUL or a backspace is visible instead of silently odd.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _picture(match: re.Match) -> str:
    code = ord(match.group())
    return "\u2421" if code == 0x7F else chr(0x2400 + code)


def strip(text: str) -> str:
    """The text without any escape sequence (what the index and search see)."""
    if "\x1b" not in text and "\x9b" not in text and not _has_c1(text):
        return text
    return _ESCAPE.sub("", text)


def _has_c1(text: str) -> bool:
    return any(ch in text for ch in "\x90\x98\x9d\x9e\x9f")


def visible_controls(text: str) -> str:
    return _CONTROL.sub(_picture, text)


@dataclass(frozen=True)
class Style:
    fg: int | None = None  # 0-15
    bg: int | None = None  # 0-15
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False

    def css(self) -> str:
        classes = []
        if self.fg is not None:
            classes.append(f"a-fg{self.fg}")
        if self.bg is not None:
            classes.append(f"a-bg{self.bg}")
        for flag, name in (
            (self.bold, "a-b"),
            (self.dim, "a-d"),
            (self.italic, "a-i"),
            (self.underline, "a-u"),
        ):
            if flag:
                classes.append(name)
        return " ".join(classes)


PLAIN = Style()


def _extended_colour(params: list[int], i: int) -> tuple[int | None, int]:
    """Parse 38;5;n or 38;2;r;g;b starting after the 38/48. Returns (colour
    index 0-15 or None, how many params were consumed)."""
    if i < len(params) and params[i] == 5:
        if i + 1 < len(params):
            n = params[i + 1]
            return (n if 0 <= n < 16 else None), 2
        return None, 1
    if i < len(params) and params[i] == 2:
        return None, 4
    return None, 0


def _apply_sgr(style: Style, raw: str) -> Style:
    try:
        params = [int(p) if p else 0 for p in raw.replace(":", ";").split(";")] if raw else [0]
    except ValueError:
        return style
    i = 0
    while i < len(params):
        p = params[i]
        i += 1
        if p == 0:
            style = PLAIN
        elif p == 1:
            style = replace(style, bold=True)
        elif p == 2:
            style = replace(style, dim=True)
        elif p == 3:
            style = replace(style, italic=True)
        elif p == 4:
            style = replace(style, underline=True)
        elif p == 22:
            style = replace(style, bold=False, dim=False)
        elif p == 23:
            style = replace(style, italic=False)
        elif p == 24:
            style = replace(style, underline=False)
        elif 30 <= p <= 37:
            style = replace(style, fg=p - 30)
        elif 90 <= p <= 97:
            style = replace(style, fg=p - 90 + 8)
        elif p == 39:
            style = replace(style, fg=None)
        elif 40 <= p <= 47:
            style = replace(style, bg=p - 40)
        elif 100 <= p <= 107:
            style = replace(style, bg=p - 100 + 8)
        elif p == 49:
            style = replace(style, bg=None)
        elif p in (38, 48):
            colour, used = _extended_colour(params, i)
            i += used
            style = replace(style, **({"fg": colour} if p == 38 else {"bg": colour}))
    return style


def parse(text: str, style: Style = PLAIN) -> tuple[list[tuple[str, str]], Style]:
    """Split text into (plain text, css classes) segments.

    `style` is the state carried over from the previous line; the returned
    style is the state at the end of this one. Control characters other than
    tab are made visible; the text is NOT HTML-escaped.
    """
    segments: list[tuple[str, str]] = []
    pos = 0
    if "\x1b" in text or "\x9b" in text or _has_c1(text):
        for match in _ESCAPE.finditer(text):
            if match.start() > pos:
                segments.append((visible_controls(text[pos : match.start()]), style.css()))
            if match.group("final") == "m" and not match.group("inter"):
                style = _apply_sgr(style, match.group("params"))
            pos = match.end()
    if pos < len(text):
        segments.append((visible_controls(text[pos:]), style.css()))
    merged: list[tuple[str, str]] = []
    for seg in segments:
        if merged and merged[-1][1] == seg[1]:
            merged[-1] = (merged[-1][0] + seg[0], seg[1])
        elif seg[0]:
            merged.append(seg)
    return merged, style

"""The conversation pane of the terminal UI: entries, word wrap, scrolling.

An entry is one message or system line, held as formatted text and wrapped into screen
lines for the window's width. The pane draws the entries bottom-up and scrolls by itself
(PageUp, PageDown), keeping at most `SCROLLBACK` of them.

Rules:
- Text a peer controls passes through `escape` before it becomes a fragment here; the
  only control character that survives, tab, becomes spaces.
- Widths are counted per grapheme cluster (`text_width`, from wcwidth): 👨‍👩‍👧 is five code
  points and one glyph two columns wide, "é" may be two code points in one column. A line
  never breaks inside a cluster.
- prompt_toolkit's own `Window` gives every code point a cell of its own width, so it
  would count that family as six columns while the terminal draws two, and leave stale
  cells behind until a full redraw. The pane and the status bar are therefore drawn by
  `GraphemeWindow`: one screen cell per cluster, of the cluster's width, which is what
  prompt_toolkit's renderer moves the cursor by.
- Only what is in view is wrapped, and each entry once per width, so a long scrollback
  costs nothing per frame.
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from collections.abc import Callable, Iterator

import wcwidth
from prompt_toolkit.data_structures import Point
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.formatted_text.utils import fragment_list_to_text, split_lines
from prompt_toolkit.key_binding import KeyBindingsBase
from prompt_toolkit.layout import Container, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.mouse_handlers import MouseHandlers
from prompt_toolkit.layout.screen import Char, Screen, WritePosition

from .format import clock, escape

SCROLLBACK = 5000
"""Messages and system lines kept; older ones are dropped in chunks of a tenth."""
WRAP_INDENT = 6
"""A long line continues under its text, past the "HH:MM " column."""
_PALETTE = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)
"""Nickname colours: the 16-colour set minus black, white and greys, so every terminal
theme shows them."""
PANE_STYLE = [
    ("time", "ansibrightblack"),
    ("system", "ansibrightblack"),
    ("warning", "ansiyellow"),
    ("error", "ansired bold"),
    ("own", "bold"),
    # The delivery states that own messages (`delivery.OwnMessage`) end with.
    ("state.pending", "ansibrightblack"),
    ("state.delivered", "ansigreen"),
    ("state.failed", "ansired bold"),
    *((f"nick.{index}", colour) for index, colour in enumerate(_PALETTE)),
]
"""Style rules for the classes the pane's fragments use."""


def nick_style(nick: str) -> str:
    """The same colour for the same nickname, in every run and on every machine."""
    return f"class:nick.{zlib.crc32(nick.encode('utf-8', 'replace')) % len(_PALETTE)}"


@functools.lru_cache(maxsize=4096)
def _cluster_width(cluster: str) -> int:
    # wcswidth is -1 for a control character; escaped text has none, but a cell is
    # never narrower than nothing.
    return max(0, wcwidth.wcswidth(cluster))


def graphemes(text: str) -> Iterator[tuple[str, int]]:
    """The grapheme clusters of `text`, each with its width in columns."""
    if text.isascii() and text.isprintable():
        for char in text:
            yield char, 1
        return
    for cluster in wcwidth.iter_graphemes(text):
        yield cluster, _cluster_width(cluster)


def text_width(text: str) -> int:
    """The columns `text` takes on a terminal, counted per grapheme cluster."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(width for _, width in graphemes(text))


_TOKEN = re.compile(r"\s+|\S+")


def _tokens(text: str) -> list[str]:
    """Runs of white space and of anything else, split only between clusters (a space
    and the combining mark on it are one cluster)."""
    if text.isascii():
        return _TOKEN.findall(text)
    tokens: list[str] = []
    for cluster, _ in graphemes(text):
        if tokens and tokens[-1].isspace() == cluster.isspace():
            tokens[-1] += cluster
        else:
            tokens.append(cluster)
    return tokens


def wrap(row: StyleAndTextTuples, width: int) -> list[StyleAndTextTuples]:
    """Break one row into screen lines of at most `width` columns.

    Lines break between words when they can, and between grapheme clusters inside a word
    longer than a line (or a run of CJK, which has no spaces). Continuation lines start
    under the text, past the time. A delivery state ("✓ 1.2 ms") is never broken.
    """
    indent = WRAP_INDENT if width > 3 * WRAP_INDENT else 0
    lines: list[StyleAndTextTuples] = [[]]
    column = 0

    def new_line() -> None:
        nonlocal column
        lines.append([("", " " * indent)] if indent else [])
        column = indent

    for fragment in row:
        style, text = fragment[0], fragment[1]
        tokens = [text] if "class:state" in style else _tokens(text)
        for token in tokens:
            size = text_width(token)
            if column + size <= width:
                lines[-1].append((style, token))
                column += size
            elif token.isspace():
                new_line()  # the break replaces the spaces
            elif size <= width - indent and column > indent:
                new_line()
                lines[-1].append((style, token))
                column += size
            else:
                piece = ""
                for cluster, cluster_size in graphemes(token):
                    if column + cluster_size > width and column > indent:
                        lines[-1].append((style, piece))
                        new_line()
                        piece = ""
                    piece += cluster
                    column += cluster_size
                lines[-1].append((style, piece))
    return lines


class Entry:
    """One item of the conversation (a message or a system line): one row per line of
    text, wrapped into screen lines for the current width."""

    def __init__(self, fragments: StyleAndTextTuples, indent: int = 0) -> None:
        # A tab is the one control character `escape` lets through; prompt_toolkit would
        # draw it as "^I", so it becomes spaces here.
        fragments = [(fragment[0], fragment[1].replace("\t", "    ")) for fragment in fragments]
        self.rows = [list(line) for line in split_lines(fragments)]
        for row in self.rows[1:]:
            row.insert(0, ("", " " * indent))
        self._wrapped: tuple[int, list[StyleAndTextTuples]] = (0, [])

    def row(self, index: int) -> StyleAndTextTuples:
        """Row `index` as drawn; a subclass may add to it."""
        return self.rows[index]

    def lines(self, width: int) -> list[StyleAndTextTuples]:
        """The screen lines of this entry at `width` columns (computed once per width)."""
        if self._wrapped[0] != width:
            rows = (self.row(index) for index in range(len(self.rows)))
            self._wrapped = (width, [line for row in rows for line in wrap(row, width)])
        return self._wrapped[1]

    def changed(self) -> None:
        """Call after changing what `row` returns, so the entry is wrapped again."""
        self._wrapped = (0, [])


def line_entry(text: str, style: str = "class:system") -> Entry:
    """A system line: the time, then `text` (already escaped) in `style`."""
    stamp = clock(seconds=False)
    return Entry([("class:time", f"{stamp} "), (style, text)], len(stamp) + 3)


def message_fragments(
    nick: str, text: str, own: bool, wall: float | None = None
) -> tuple[StyleAndTextTuples, int]:
    """A message as fragments ("HH:MM nick: text"), and the indent of its further lines.
    `wall`: when it was said (a message from the history), else now; a day other than
    today is shown with its date."""
    stamp = clock(wall, seconds=False)
    if wall is not None and time.strftime("%x", time.localtime(wall)) != time.strftime("%x"):
        stamp = time.strftime("%m-%d %H:%M", time.localtime(wall))
    prefix: StyleAndTextTuples = [
        ("class:time", f"{stamp} "),
        (nick_style(nick) + (" class:own" if own else ""), escape(nick) or "?"),
        ("", ": "),
    ]
    body = escape(text, keep_newlines=True)
    return [*prefix, ("", body)], min(sum(text_width(piece[1]) for piece in prefix), 24)


class Conversation(UIControl):
    """The conversation pane: entries wrapped to the window, drawn bottom-up.

    It scrolls by itself rather than through the window: each frame holds the screen
    lines that fit above the bottom entry (the newest, or while scrolled back the
    `anchor` entry, so that arriving messages do not move what is being read), and only
    those are wrapped. Its height follows its content, so a short conversation sits just
    above the status bar.
    """

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.anchor: int | None = None
        self.unseen = 0
        """Entries added while scrolled back."""
        self._width, self._height = 80, 24
        """The size of the last frame, for paging between frames."""
        self.older: Callable[[], list[Entry]] | None = None
        """Where older entries come from when PageUp reaches the first one (the history);
        it returns [] when there are none."""

    def add(self, entry: Entry) -> None:
        """Append `entry`; past `SCROLLBACK`, drop the oldest tenth at once."""
        self.entries.append(entry)
        if self.anchor is not None:
            self.unseen += 1
        excess = len(self.entries) - SCROLLBACK
        if excess >= SCROLLBACK // 10:
            del self.entries[:excess]
            if self.anchor is not None:
                self.anchor = max(0, self.anchor - excess)

    def follow(self) -> None:
        """Stop scrolling back: show the newest entry at the bottom again."""
        self.anchor = None
        self.unseen = 0

    def page_up(self) -> None:
        """Show the page above; the entry at the top stays in view, at the bottom. At the
        first entry, older ones are asked for (`older`) and put in front."""
        bottom = self._bottom()
        top, _ = self._top_for(bottom)
        if top == 0 and self.older is not None:
            earlier = self.older()
            if earlier:
                self.entries[0:0] = earlier
                bottom += len(earlier)
                self.anchor = bottom
                top, _ = self._top_for(bottom)
        if top < bottom:
            self.anchor = top
        elif top > 0:  # one entry taller than the window
            self.anchor = top - 1

    def page_down(self) -> None:
        """Show the page below; the entry at the bottom stays in view, at the top."""
        if self.anchor is None:
            return
        bottom = self.anchor
        used = self._entry_height(bottom)
        while bottom + 1 < len(self.entries):
            height = self._entry_height(bottom + 1)
            if used + height > self._height and bottom > self.anchor:
                break
            bottom += 1
            used += height
        if bottom >= len(self.entries) - 1:
            self.follow()
        else:
            self.anchor = bottom

    def text(self) -> str:
        """The whole pane as plain text, unwrapped (for tests and debugging)."""
        return "\n".join(
            fragment_list_to_text(entry.row(index))
            for entry in self.entries
            for index in range(len(entry.rows))
        )

    def create_content(self, width: int, height: int | None) -> UIContent:
        self._width = max(1, width)
        if height is not None:
            self._height = max(1, height)
        lines: list[StyleAndTextTuples] = []
        if self.entries:
            bottom = self._bottom()
            top, skip = self._top_for(bottom)
            for entry in self.entries[top : bottom + 1]:
                lines += entry.lines(self._width)
            del lines[:skip]

        return UIContent(
            get_line=lines.__getitem__,
            line_count=len(lines),
            cursor_position=Point(x=0, y=max(len(lines) - 1, 0)),
            show_cursor=False,
        )

    def preferred_height(
        self,
        width: int,
        max_available_height: int,
        wrap_lines: bool,
        get_line_prefix: Callable[[int, int], object] | None,
    ) -> int | None:
        self._width = max(1, width)
        height = 0
        for number in range(len(self.entries) - 1, -1, -1):
            height += self._entry_height(number)
            if height >= max_available_height:
                return max_available_height
        return height

    def is_focusable(self) -> bool:
        return False

    def _bottom(self) -> int:
        last = len(self.entries) - 1
        return last if self.anchor is None else min(self.anchor, last)

    def _top_for(self, bottom: int) -> tuple[int, int]:
        """The first entry in view when `bottom` is the last, and how many of its lines
        fall off the top, at the last frame's size."""
        used = 0
        for number in range(bottom, -1, -1):
            used += self._entry_height(number)
            if used >= self._height:
                return number, used - self._height
        return 0, 0

    def _entry_height(self, number: int) -> int:
        return len(self.entries[number].lines(self._width))


_COVERED = Char("", "")
"""The cell under the right half of a wide cluster (as prompt_toolkit's Window does)."""


class GraphemeWindow(Container):
    """Draws the lines of a `UIControl` one screen cell per grapheme cluster.

    Each cluster becomes one `Char` whose width is the cluster's (`text_width`), where a
    `Window` would give each code point its own cell; prompt_toolkit's renderer then
    advances by that width, as the terminal does. Lines are not wrapped here (the pane
    wraps its own): a longer line is cut after the last whole cluster that fits. The last
    lines of the content are shown when it has more than fit.

    `height`: a fixed height; without it, the content's preferred height, never more
    (like a Window with dont_extend_height). `style` applies to the whole area.
    """

    def __init__(self, content: UIControl, *, height: int | None = None, style: str = "") -> None:
        self.content = content
        self.height = height
        self.style = style

    def reset(self) -> None:
        self.content.reset()

    def preferred_width(self, max_available_width: int) -> Dimension:
        return Dimension()

    def preferred_height(self, width: int, max_available_height: int) -> Dimension:
        if self.height is not None:
            return Dimension.exact(self.height)
        preferred = self.content.preferred_height(width, max_available_height, False, None)
        if preferred is None:
            return Dimension()
        return Dimension(max=preferred, preferred=preferred)

    def write_to_screen(
        self,
        screen: Screen,
        mouse_handlers: MouseHandlers,
        write_position: WritePosition,
        parent_style: str,
        erase_bg: bool,
        z_index: int | None,
    ) -> None:
        left, top = write_position.xpos, write_position.ypos
        width = write_position.width
        height = min(write_position.height, self.preferred_height(width, write_position.height).max)
        if width <= 0 or height <= 0:
            return
        base = f"{parent_style} {self.style}".strip()
        content = self.content.create_content(width, height)
        first = max(0, content.line_count - height)
        blank = _cell(" ", base, 1)
        for y in range(height):
            cells = screen.data_buffer[top + y]
            for x in range(left, left + width):
                cells[x] = blank
            if first + y < content.line_count:
                _draw_line(cells, content.get_line(first + y), left, width, base)
        screen.height = max(screen.height, top + height)

    def get_children(self) -> list[Container]:
        return []

    def get_key_bindings(self) -> KeyBindingsBase | None:
        return None


def _draw_line(
    cells: dict[int, Char], line: StyleAndTextTuples, left: int, width: int, base: str
) -> None:
    """Put one line's clusters into `cells` from column `left`, within `width` columns."""
    x = 0
    for fragment in line:
        style = f"{base} {fragment[0]}"
        for cluster, size in graphemes(fragment[1]):
            if size == 0:
                # Nothing to draw on its own (a mark left after a fragment boundary, a
                # zero-width space): it joins the cell before it, as on the terminal.
                previous = x - 1
                while previous >= 0 and cells[left + previous] is _COVERED:
                    previous -= 1
                if previous >= 0:
                    char = cells[left + previous]
                    cells[left + previous] = _cell(char.char + cluster, char.style, char.width)
                continue
            if x + size > width:
                return
            cells[left + x] = _cell(cluster, style, size)
            for covered in range(1, size):
                cells[left + x + covered] = _COVERED
            x += size


@functools.lru_cache(maxsize=65536)
def _cell(cluster: str, style: str, width: int) -> Char:
    """A screen cell holding `cluster`, `width` columns wide (not the sum of its code
    points' widths, which is what Char would count)."""
    char = Char(cluster, style)
    char.width = width
    return char

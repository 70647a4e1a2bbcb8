"""What peer text looks like once escaped for a terminal, and in `--jsonl`."""

from __future__ import annotations

import json

import pytest

from udpchat.protocol import MessageReceived
from udpchat.ui.format import deliveries, describe, escape, json_line, to_json

ZALGO = "Z" + "\u0301\u0316" * 500 + "algo"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
@pytest.mark.parametrize("keep_newlines", [False, True])
def test_line_and_paragraph_separators_are_escaped(separator: str, keep_newlines: bool) -> None:
    shown = escape(f"one{separator}two", keep_newlines=keep_newlines)
    assert shown == f"one\\u{ord(separator):04x}two"


def test_a_character_keeps_at_most_four_combining_marks_and_the_rest_are_counted() -> None:
    assert escape(ZALGO) == "Z\u0301\u0316\u0301\u0316[+996 combining marks]algo"
    line = describe(MessageReceived(peer=("127.0.0.1", 9001), nick="bob", text=ZALGO, sent_at_ms=0))
    assert line is not None and len(line) < 60


@pytest.mark.parametrize(
    "text",
    [
        "Vie\u0302\u0323t Nam",  # two marks on one letter
        "e\u0301\u0301\u0301\u0301",  # four: the most kept
        "देवनागरी",  # spacing marks between letters
        "👨‍👩‍👧 🇯🇵 👍🏽 ❤️",  # emoji sequences
        "你好, こんにちは",
    ],
)
def test_ordinary_text_with_marks_is_left_alone(text: str) -> None:
    assert escape(text) == text


def test_jsonl_escapes_the_separators_and_extra_marks_and_keeps_the_text_exact() -> None:
    text = "a\u2028b\u2029c " + ZALGO + " \U0001d167" * 2 + "\U0001d167" * 6
    line = to_json(MessageReceived(peer=("127.0.0.1", 9001), nick="bob", text=text, sent_at_ms=0))
    assert "\u2028" not in line and "\u2029" not in line
    assert "\\u2028" in line and "\\ud834\\udd67" in line  # outside the BMP: a surrogate pair
    assert line.count("\u0301") + line.count("\u0316") == 4  # the marks kept on the Z
    assert json.loads(line)["text"] == text
    assert json.loads(json_line("message_sent", text=text))["text"] == text


def test_deliveries_are_counted_in_good_english() -> None:
    assert [deliveries(n) for n in (0, 1, 2)] == ["0 deliveries", "1 delivery", "2 deliveries"]

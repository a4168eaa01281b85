"""The server's stop rules on their own (no model): what ends a middle, and that streaming never
shows text a later rule removes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bytecover.server.stopping import Stopper, StopRules


def words(text: str) -> int:
    """A stand-in tokenizer for the n_predict rule: one token per whitespace-separated word."""
    return len(text.split())


def run(rules: StopRules, pieces: list[str], clock: list[float] | None = None) -> tuple[str, list[str], Stopper]:
    t = iter(clock) if clock else None
    s = Stopper(rules, words, clock=(lambda: next(t)) if t else Stopper.clock)  # type: ignore[arg-type]
    shown = []
    for p in pieces:
        shown.append(s.feed(p))
        if s.done:
            break
    shown.append(s.finish() if s.done else s.finish("eos", "eos"))
    return s.text, shown, s


def test_stop_string_cuts_and_is_never_shown_in_part() -> None:
    text, shown, s = run(StopRules(stops=("END",)), ["a b E", "N", "D more"])
    assert text == "a b " and s.outcome.stop_type == "word" and s.outcome.stopping_word == "END"
    assert "".join(shown) == text
    assert shown[0] == "a b "  # "E" could start END: held back until it is decided


def test_control_text_spelled_by_the_model_ends_the_middle() -> None:
    text, shown, s = run(StopRules(control_texts=("<|fim_middle|>", "<|endoftext|>")), ["x = 1<|endo", "ftext|>junk"])
    assert text == "x = 1" and "".join(shown) == "x = 1"
    assert s.outcome.stop_type == "eos" and s.outcome.reason == "control"


def test_suffix_key_stops_where_the_model_writes_the_suffix_again() -> None:
    suffix = "\n    return total\n\nprint(f(3))\n"
    text, shown, s = run(StopRules(prefix="def f(n):\n    total = ", suffix=suffix), ["sum(range(n))", "\n    return total\n", "\nprint(f(3))\n"])
    assert text == "sum(range(n))" and s.outcome.reason == "suffix"
    assert "".join(shown) == text


def test_echo_of_a_one_line_suffix_is_dropped_and_never_streamed() -> None:
    # The gap is on the file's last line (no suffix key): the model wrote the suffix, then a line
    # break. That copy is dropped, and none of it was shown while it could still be one.
    rules = StopRules(prefix="print(add(1, ", suffix="2))")
    text, shown, s = run(rules, ["2", "))\n"])
    assert text == "" and shown == ["", "", ""]
    text, shown, _ = run(StopRules(prefix="x = compute(", suffix="value)\n"), ["value", ")\n"])
    assert "".join(shown) == text


def test_n_indent_cuts_at_the_first_line_that_leaves_the_block() -> None:
    pieces = ["a = 1\n", "        b = 2\n", "    c = 3\n"]
    text, shown, s = run(StopRules(n_indent=8), pieces)
    assert text == "a = 1\n        b = 2\n" and s.outcome.stop_type == "limit" and s.outcome.reason == "n_indent"
    assert "".join(shown) == text
    text, _, _ = run(StopRules(n_indent=4), pieces)
    assert text == "".join(pieces)


def test_t_max_predict_ms_counts_only_after_a_newline() -> None:
    # clock: read at creation (0 s), then once per piece from the first newline on
    text, _, s = run(StopRules(t_max_predict_ms=100), ["a", "b", "\nc", "d", "e"], clock=[0.0, 0.05, 0.2, 0.3])
    assert text == "ab\ncd" and s.outcome.reason == "t_max_predict_ms"
    text, _, s = run(StopRules(t_max_predict_ms=100), ["a", "b", "c"], clock=[0.0, 5.0, 6.0])
    assert text == "abc" and s.outcome.reason == "eos"


def test_n_predict_keeps_exactly_that_many_tokens() -> None:
    text, shown, s = run(StopRules(max_tokens=3), ["one two", " three four five"])
    assert words(text) == 3 and text.startswith("one two three") and s.outcome.reason == "n_predict"
    assert "".join(shown) == text
    text, _, s = run(StopRules(max_tokens=0), ["anything"])
    assert text == "" and s.outcome.stop_type == "limit"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="ab)\n <|>ENDx", max_size=6), max_size=8),
    st.sampled_from([None, "b)", "ab\nx)\n", ")"]),
    st.integers(0, 3),
)
def test_streamed_pieces_are_exactly_the_final_text(pieces: list[str], suffix: str | None, n_indent: int) -> None:
    """Whatever rules fire, what was shown piece by piece is the final text: nothing shown is
    taken back, nothing is lost."""
    rules = StopRules(stops=("END",), control_texts=("<|x|>",), prefix="a(", suffix=suffix, n_indent=n_indent)
    text, shown, _ = run(rules, pieces)
    assert "".join(shown) == text

"""The UTF-8 automaton of token decoding against Python's own decoder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bytecover.utf8_mask import START, run, state_after


def _is_prefix_of_valid(data: bytes) -> bool:
    # Python's incremental decoder accepts exactly the prefixes of valid UTF-8.
    import codecs

    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        return True
    except UnicodeDecodeError:
        return False


@settings(max_examples=3000, derandomize=True)
@given(st.binary(max_size=8) | st.text(max_size=4).map(lambda s: s.encode()[:7]))
def test_automaton_matches_python(data: bytes) -> None:
    end = run(START, data)
    assert (end is not None) == _is_prefix_of_valid(data), data
    if end is not None:
        complete = end == START
        try:
            data.decode("utf-8")
            assert complete, data
        except UnicodeDecodeError:
            assert not complete, data


def test_state_after_reads_only_the_last_character() -> None:
    text = "naïve 中".encode()
    assert state_after(text) == START
    assert state_after(text[:-1]) == run(START, "中".encode()[:2])
    assert state_after(b"\xff abc") == START

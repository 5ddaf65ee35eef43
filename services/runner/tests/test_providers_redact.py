"""What a provider's error text keeps of the API key, echoed whole, upper-cased or cut short: nothing. Any run
of 8 consecutive characters of the key (the whole key when shorter), in any case, is replaced."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from agentry_runner.providers.base import REDACTED, redact


def test_echoes_of_a_key_are_replaced_and_other_text_kept():
    key = "sk-proj-AbCdEfGh0123456789"
    text = f"bad key {key.upper()}; did you mean {key[:15]}? or {key[-10:].lower()} (len {len(key)})"
    assert redact(text, key) == "bad key [redacted]; did you mean [redacted]? or [redacted] (len 26)"
    assert redact("nothing to hide here", key) == "nothing to hide here"
    assert redact(f"short key {key[:7]}", key) == f"short key {key[:7]}"  # 7 characters are not a fragment
    assert redact("a tiny key: abc, ABC", "abc") == "a tiny key: [redacted], [redacted]"


@given(
    key=st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=60),
    noise=st.lists(st.text(max_size=12), max_size=4),
    cuts=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60), st.booleans()), max_size=4),
)
def test_redaction_leaves_no_eight_characters_of_the_key_in_any_case(key, noise, cuts):
    echoes = [key[a:b].upper() if up else key[a:b] for a, b, up in cuts] + [key]
    text = "".join(n + e for n, e in zip([*noise, *[""] * len(echoes)], echoes, strict=False))
    out = redact(text, key).replace(REDACTED, "\0")  # the marker's own letters are not the key's
    n = min(8, len(key))
    assert not {key[i : i + n].lower() for i in range(len(key) - n + 1)} & {
        out[i : i + n].lower() for i in range(len(out) - n + 1)
    }
    assert redact("nothing to hide here", "sk-ABCDEFGHIJ") == "nothing to hide here"

"""Shared text rules: NUL refused everywhere, every control character refused in names."""

import re
from typing import Annotated

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.text import NO_CONTROL, NO_NUL, Refuse, StorableText


@pytest.mark.parametrize("text", ["Zoë Saldaña", "a\nb\tc\r", "\u200bzero-width", ""])
def test_storable_text_accepts_anything_but_nul(text: str) -> None:
    assert TypeAdapter(StorableText).validate_python(text) == text


def test_storable_text_refuses_nul_with_a_stable_error_type() -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(StorableText).validate_python("hi\u0000")

    assert [e["type"] for e in caught.value.errors()] == ["string_nul_character"]


@pytest.mark.parametrize("char", ["\u0000", "\t", "\n", "\u001f", "\u007f", "\u0085", "\u009f"])
def test_no_control_finds_every_c0_c1_and_del_character(char: str) -> None:
    assert NO_CONTROL.found_in(f"Ann{char}Lee")


@pytest.mark.parametrize("text", ["Ann Lee", "Zoë Saldaña", "Ann\u00a0Lee"])
def test_no_control_lets_printable_names_through(text: str) -> None:
    assert not NO_CONTROL.found_in(text)


@pytest.mark.parametrize("rule", [NO_NUL, NO_CONTROL])
def test_json_schema_pattern_accepts_what_the_rule_accepts(rule: Refuse) -> None:
    """The documented pattern (read by clients and schemathesis) is the rule itself."""
    pattern = TypeAdapter(Annotated[str, rule]).json_schema()["pattern"]

    for text in ["Ann Lee", "a\u0000", "a\nb", "\u009f"]:
        assert (re.fullmatch(pattern, text) is None) == rule.found_in(text)

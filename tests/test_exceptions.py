"""The one helper that unwraps a single error from (nested) exception groups."""

from __future__ import annotations

import pytest

from granite_tuner._exceptions import innermost, raise_lone_error


def test_innermost_unwraps_nested_groups_of_one_and_keeps_the_rest() -> None:
    error = ValueError("bad")
    assert innermost(error) is error
    assert innermost(ExceptionGroup("outer", [ExceptionGroup("inner", [error])])) is error
    several = ExceptionGroup("two", [error, KeyError("k")])
    assert innermost(several) is several
    assert innermost(ExceptionGroup("outer", [several])) is several


def test_raise_lone_error_raises_the_error_with_its_own_cause() -> None:
    cause = OSError("disk")
    error = ValueError("bad")
    error.__cause__ = cause
    with pytest.raises(ValueError) as caught, raise_lone_error():
        raise ExceptionGroup("wrapper", [error])
    assert caught.value is error
    assert caught.value.__cause__ is cause


def test_raise_lone_error_lets_a_group_of_several_through() -> None:
    with pytest.raises(ExceptionGroup), raise_lone_error():
        raise ExceptionGroup("two", [ValueError("a"), KeyError("b")])

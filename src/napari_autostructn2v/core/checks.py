"""Type and range checks with messages that name the value, what is allowed and what was given."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import ConfigError, InputError


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Rule:
    """The type and range of one value: a configuration field or an argument of the API."""

    kind: str  # "bool", "int", "float" or "str"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    multiple: int = 1
    choices: tuple = ()
    optional: bool = False  # None allowed
    none_means: str = ""

    def describe(self) -> str:
        if self.kind == "bool":
            text = "true or false (a boolean)"
        elif self.kind == "str":
            text = f"one of {', '.join(repr(c) for c in self.choices)}"
        else:
            noun = "an integer" if self.kind == "int" else "a number"
            if self.high is None:
                text = f"{noun} {'>' if self.low_open else '>='} {_number(self.low)}"
            else:
                text = (f"{noun} in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                        f"{')' if self.high_open else ']'}")
            if self.multiple > 1:
                text += f" and a multiple of {self.multiple}"
        if self.optional:
            text += f", or None (null in JSON{': ' + self.none_means if self.none_means else ''})"
        return text

    def check(self, value, name: str, error: type[ValueError] = ConfigError):
        """`value` as a plain Python bool, int, float or str, or `error` naming the value and the range."""
        if value is None and self.optional:
            return None
        converted = self._convert(value)
        if converted is None or not self._in_range(converted):
            raise error(f"{name} must be {self.describe()}; got {value!r}.")
        return converted

    def _convert(self, value):
        # numpy booleans as well, without importing numpy here
        numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
        is_bool = isinstance(value, bool) or numpy_bool
        if self.kind == "bool":
            return bool(value) if is_bool else None
        if self.kind == "str":
            return value if isinstance(value, str) else None
        if is_bool:
            return None
        if self.kind == "int":
            return int(value) if isinstance(value, numbers.Integral) else None
        if isinstance(value, numbers.Real) and math.isfinite(value):
            return float(value)
        return None

    def _in_range(self, value) -> bool:
        if self.kind == "bool":
            return True
        if self.kind == "str":
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return value % self.multiple == 0 if self.kind == "int" else True


def check_int(value, name: str, low: int, high: int | None = None) -> int:
    """`value` as an int if it is an integer (not a bool) in [low, high]; otherwise InputError naming it."""
    return Rule("int", low, high).check(value, name, InputError)


def check_number(value, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a finite real number (not a bool) in the interval; otherwise InputError."""
    unbounded = high == math.inf
    return Rule("float", low, None if unbounded else high, low_open, high_open and not unbounded).check(
        value, name, InputError)

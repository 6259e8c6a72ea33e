"""Go's ``flag`` package command-line syntax, sans-IO: what remaphore's command line means.

remaphore parses its flags with Go's standard ``flag`` package, so a remaphore
command line follows that package's rules, not getopt's:

* a flag is ``-name`` or ``--name`` (one or two dashes mean the same), with its
  value as ``-name=value`` or, for a flag that is not boolean, as the next
  argument ``-name value`` (taken whatever it looks like, even ``-o``);
* a boolean flag never takes the next argument: ``-o`` is true, ``-o=false``
  false (``1 0 t f T F true false TRUE FALSE True False``);
* parsing stops at the first argument that is not a flag (``-`` alone is not
  one) or just after ``--``; everything from there on is positional;
* ``-h``/``-help`` (either dash count) asks for help unless defined;
* a flag given twice: the last one wins;
* ``---x``, ``-=x`` and ``--=x`` are bad syntax; an unknown flag, a missing
  value or a bad boolean are errors.

:func:`parse` applies those rules to ``argv`` and returns the settings in order
and the positional rest; :func:`canonical` turns that into an argv every
getopt-style parser reads the same way (each flag once, values as separate
arguments, ``--`` before the positional part), which is how ``tether signal``
and ``remaphore`` hand it to click.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence

__all__ = ["FlagError", "Parsed", "parse", "canonical", "parse_bool", "HELP_NAMES"]

#: the names Go's flag package treats as a request for help when they are not defined
HELP_NAMES = ("h", "help")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class FlagError(ValueError):
    """A command line Go's flag package refuses (exit 2, as remaphore)."""


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: exactly the twelve spellings it accepts."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid syntax: {text!r}")


class Parsed(namedtuple("Parsed", ["settings", "args", "help"], defaults=[False])):
    """What a command line means: ``settings``, (name, value) in command-line order (a
    boolean's value is a bool, any other flag's a str); ``args``, the positional arguments
    after the flags; ``help``, whether a help flag was met (the settings before it are
    still reported). A named tuple, not a dataclass: a one-shot send parses its command
    line with this module, and dataclasses' import is a good part of its start-up."""

    __slots__ = ()

    def values(self) -> dict[str, bool | str]:
        """The final value of every flag that was given (the last one wins)."""
        return dict(self.settings)


def parse(argv: Sequence[str], flags: Mapping[str, bool],
          check: Mapping[str, Callable[[str], object]] | None = None) -> Parsed:
    """Apply Go's flag rules; ``flags`` maps each defined name to whether it is boolean.

    ``check`` maps a non-boolean flag to a converter that raises ValueError on a
    bad value; like Go's ``Value.Set`` it runs as the flag is met, so the first
    bad flag on the line is the one reported.
    """
    settings: list[tuple[str, bool | str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if len(arg) < 2 or arg[0] != "-":
            break  # the first non-flag ends the flags; "-" alone is positional
        if arg == "--":
            i += 1
            break
        name = arg[2:] if arg[1] == "-" else arg[1:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        i += 1
        name, has_value, value = name.partition("=")
        if name not in flags:
            if name in HELP_NAMES:
                return Parsed(tuple(settings), (), help=True)
            raise FlagError(f"flag provided but not defined: -{name}")
        if flags[name]:
            if has_value:
                try:
                    settings.append((name, parse_bool(value)))
                except ValueError:
                    raise FlagError(f"invalid boolean value {value!r} for -{name}: parse error") from None
            else:
                settings.append((name, True))
            continue
        if not has_value:
            if i >= len(argv):
                raise FlagError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        if check and name in check:
            try:
                check[name](value)
            except ValueError as exc:
                raise FlagError(f"invalid value {value!r} for flag -{name}: {exc}") from None
        settings.append((name, value))
    return Parsed(tuple(settings), tuple(argv[i:]))


def canonical(parsed: Parsed, spelling: Mapping[str, str], help_spelling: str = "--help") -> list[str]:
    """One unambiguous argv for the same meaning: ``spelling`` maps a flag name to the option string to emit.

    Booleans that end up true appear once, false ones not at all; other flags
    appear once with their last value as a separate argument; ``--`` separates
    the positional arguments, so none of them is read as an option.
    """
    if parsed.help:
        return [help_spelling]
    out: list[str] = []
    for name, value in parsed.values().items():
        if value is True:
            out.append(spelling[name])
        elif value is not False:
            out += [spelling[name], str(value)]
    return [*out, "--", *parsed.args]

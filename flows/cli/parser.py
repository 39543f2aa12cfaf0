"""The command line's parser machinery: one-line usage errors, commands whose options are added
when the command is used, option types, and options whose defaults come from a config.

An option that mirrors a config field (a pydantic model's field, or a keyword argument of a
function) is added with :func:`add_mirrored`: its default (and, unless given, its help text) is
read from the config, and the action remembers where (``action.mirrors``) so that a test checks
every such option against its source. The options of a command are added only when the command
is parsed or its help is shown (:class:`CommandParser`), so that ``sgilo --help`` imports none of
the configs (nor torch).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from typing import Any, NoReturn


def stderr(message: str) -> None:
    """Print one line to stderr (flushed: the line is out before a crash or a signal)."""
    print(message, file=sys.stderr, flush=True)


def printable(text: str) -> str:
    """``text`` on one line, control characters escaped
    (:func:`sgilo.pipeline.io.limits.printable`)."""
    from sgilo.pipeline.io.limits import printable as one_line

    return one_line(text)


def one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace collapsed to single spaces."""
    return " ".join(str(exc).split())


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2): scripts and logs
    get ``sgilo reconstruct: error: <what>`` instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        text = printable(" ".join(message.split()))
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


class CommandParser(OneLineParser):
    """A sub-command's parser whose options ``populate(parser)`` adds on first use (parsing,
    help, usage), so that building the whole command line imports nothing heavy."""

    def __init__(
        self,
        *args: Any,
        populate: Callable[[argparse.ArgumentParser], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def ready(self) -> CommandParser:
        """Add the command's options now (once); returns the parser."""
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)
        return self

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.ready()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.ready()
        return super().format_help()

    def format_usage(self) -> str:
        self.ready()
        return super().format_usage()


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not value == value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parsed_by(module: str, function: str) -> Callable[[str], object]:
    """An argparse type that parses with ``module.function`` (imported when an option is given,
    so ``sgilo --help`` stays fast), its ``ValueError`` shown as a usage error."""

    def parse(text: str) -> object:
        import importlib

        try:
            return getattr(importlib.import_module(module), function)(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def config_default(source: Any, name: str) -> Any:
    """The default of field ``name`` of ``source``: a pydantic model class (its
    ``model_fields``), a model instance (its value, e.g. a preset) or a function (the keyword
    argument's default)."""
    from pydantic import BaseModel

    if isinstance(source, BaseModel):
        return getattr(source, name)
    if isinstance(source, type) and issubclass(source, BaseModel):
        return source.model_fields[name].get_default(call_default_factory=True)
    return inspect.signature(source).parameters[name].default


def config_description(source: Any, name: str) -> str | None:
    """The description of field ``name`` of a pydantic model (class or instance), if any."""
    model = source if isinstance(source, type) else type(source)
    info = getattr(model, "model_fields", {}).get(name)
    return None if info is None else info.description


def source_name(source: Any) -> str:
    """How a config source is named in help texts and test ids."""
    if isinstance(source, type) or callable(source):
        return source.__name__
    return type(source).__name__


def add_mirrored(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *flags: str,
    source: Any,
    field: str,
    help: str | None = None,
    **kwargs: Any,
) -> argparse.Action:
    """Add an option whose default is field ``field`` of ``source`` (see
    :func:`config_default`); its help text is ``help`` or the field's description, followed by
    the default (unless it is ``None``). The action records ``mirrors = (source, field)``."""
    default = config_default(source, field)
    text = help if help is not None else (config_description(source, field) or "")
    shown = "%(default)s" if not isinstance(default, tuple) else ",".join(map(str, default))
    if default is not None:  # None: "not given", said by the help text where it matters
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    action = parser.add_argument(*flags, default=default, help=text, **kwargs)
    action.mirrors = (source, field)  # type: ignore[attr-defined]
    return action


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` (default cpu)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def cuda_missing(device: str) -> bool:
    """Whether ``device`` is "cuda" and torch sees no CUDA device."""
    if device != "cuda":
        return False
    import torch

    return not torch.cuda.is_available()

"""Command-line options made from the job parameter models: one source for each option.

A command lists the fields of its configuration model it exposes (`Option("snapshots.
horizon_days")`). The option's type and default are the field's, its help text is the
field's `description`, and the values given are checked by the model itself: a value the
settings refuse is refused as it would be in a notebook, and the message names the option.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

EXIT_BAD_INPUT = 2  # as Typer exits for an option it cannot parse

Config = TypeVar("Config", bound=BaseModel)
_FROM_FIELD: Any = object()  # the field's own default


@dataclass(frozen=True)
class Option:
    """One field of a command's configuration model, offered on its command line.

    Attributes:
        path: The field, dotted through nested models ("snapshots.horizon_days").
        flags: Its names on the command line; by default `--field-name` (and
            `--no-field-name` for a yes/no field).
        default: A default other than the field's (e.g. no progress bar under cron).
    """

    path: str
    flags: tuple[str, ...] = ()
    default: Any = _FROM_FIELD

    @property
    def name(self) -> str:
        """The command function's parameter: the field's own name."""
        return self.path.rpartition(".")[2]

    @property
    def flag(self) -> str:
        """How an error names the option."""
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")


def field_of(model: type[BaseModel], path: str) -> FieldInfo:
    """The field at a dotted path through nested models.

    Raises:
        KeyError: No such field.
    """
    *parents, name = path.split(".")
    for parent in parents:
        nested = model.model_fields[parent].annotation
        if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
            raise KeyError(f"{model.__name__}.{parent} is not a model")
        model = nested
    if name not in model.model_fields:
        raise KeyError(f"{model.__name__} has no field {name!r}")
    return model.model_fields[name]


def parameter(model: type[BaseModel], option: Option) -> inspect.Parameter:
    """The Typer parameter of one option: the field's type, default and description.

    Raises:
        ValueError: The field has no description (every option has help text).
    """
    field = field_of(model, option.path)
    if not field.description:
        raise ValueError(f"{model.__name__}.{option.path} needs a description: its --help")
    if option.default is not _FROM_FIELD:
        default = option.default
    else:
        default = ... if field.is_required() else field.get_default(call_default_factory=True)
    return inspect.Parameter(
        option.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *option.flags, help=field.description),
        annotation=field.annotation,
    )


def config_from(model: type[Config], options: Sequence[Option], values: dict[str, Any]) -> Config:
    """The configuration the options' values make (fields not offered keep their defaults).

    Raises:
        typer.Exit: A value the model refuses (exit 2); the message names the option.
    """
    nested: dict[str, Any] = {}
    for option in options:
        *parents, name = option.path.split(".")
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[name] = values[option.name]
    try:
        return model.model_validate(nested)
    except ValidationError as exc:
        flags = {option.path: option.flag for option in options}
        problems = [
            f"{flags.get('.'.join(map(str, err['loc'])), '.'.join(map(str, err['loc'])))}: "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors(include_url=False)
        ]
        typer.echo(f"error: {'; '.join(problems)}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc


def command(
    model: type[Config], options: Sequence[Option]
) -> Callable[[Callable[[Config], None]], Callable[..., None]]:
    """Decorate `run(config)` into a Typer command with one option per `options` item.

    The command's help is `run`'s docstring; Typer reads the options from the signature
    made here, so they cannot drift from the model.
    """
    names = [option.name for option in options]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"options with the same parameter name: {', '.join(duplicated)}")
    signature = inspect.Signature([parameter(model, option) for option in options])

    def decorate(run: Callable[[Config], None]) -> Callable[..., None]:
        def invoke(**values: Any) -> None:
            run(config_from(model, options, values))

        invoke.__signature__ = signature  # type: ignore[attr-defined]
        invoke.__name__, invoke.__qualname__ = run.__name__, run.__qualname__
        invoke.__doc__, invoke.__module__ = run.__doc__, run.__module__
        return invoke

    return decorate

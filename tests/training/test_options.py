"""Options made from a configuration model: its fields' types, defaults, help and checks."""

from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from training.options import Option, command, field_of


class Inner(BaseModel):
    rounds: int = Field(default=3, ge=1, description="How many rounds.")


class Outer(BaseModel):
    name: str = Field(description="A name.")
    inner: Inner = Inner()
    quiet: bool = Field(default=False, description="Say less.")
    secret: int = 0  # no description: cannot be an option


def cli(options: tuple[Option, ...]) -> tuple[typer.Typer, list[Outer]]:
    app, seen = typer.Typer(), []

    @app.command()
    @command(Outer, options)
    def run(config: Outer) -> None:
        """Do it."""
        seen.append(config)

    return app, seen


def test_values_build_the_nested_model_and_the_rest_keep_their_defaults() -> None:
    app, seen = cli((Option("name", ("--called",)), Option("inner.rounds"), Option("quiet")))
    result = CliRunner().invoke(app, ["--called", "x", "--rounds", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen == [Outer(name="x", inner=Inner(rounds=5), quiet=True)]
    CliRunner().invoke(app, ["--called", "y"])
    assert seen[-1] == Outer(name="y")


def test_a_value_the_model_refuses_is_exit_2_naming_the_option_as_typed() -> None:
    app, seen = cli((Option("name", ("--called",)), Option("inner.rounds")))
    result = CliRunner().invoke(app, ["--called", "x", "--rounds", "0"])
    assert result.exit_code == 2 and not seen
    assert "--rounds: Input should be greater than or equal to 1" in result.stderr
    missing = CliRunner().invoke(app, ["--rounds", "2"])  # required by the model: by Typer
    assert missing.exit_code == 2 and "--called" in missing.output


def test_an_option_needs_a_described_field_and_a_name_of_its_own() -> None:
    assert field_of(Outer, "inner.rounds").default == 3
    with pytest.raises(KeyError, match="no field 'round'"):
        field_of(Outer, "inner.round")
    with pytest.raises(KeyError, match="Outer.name is not a model"):
        field_of(Outer, "name.rounds")
    with pytest.raises(ValueError, match="Outer.secret needs a description"):
        command(Outer, (Option("secret"),))
    with pytest.raises(ValueError, match="same parameter name: name"):
        command(Outer, (Option("name"), Option("name", ("--other",))))

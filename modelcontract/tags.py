"""The tags of a registered model version: their keys, what each means, and their parsing.

MLflow keeps a version's tags as text. Each tag is a field of one of the models below, named
as its key: `parse` reads a version's tags and names the tag that is missing or wrong,
`to_tags` gives the text to store. A new tag (a model file's sha256, a drift reference, the
model family once a second one is served) is one field of the model that carries it; the
writer and every reader see it at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# What the promotion gate writes on the version it judged (an unchanged champion is not
# judged, so it gets no tag).
GateVerdict = Literal["promoted", "forced", "refused"]
GATE_VERDICTS: tuple[str, ...] = ("promoted", "forced", "refused")


class TagError(ValueError):
    """A model version's tags break the contract; the message names the version and tag."""


def _as_text(value: object) -> str:
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


class _VersionTags(BaseModel):
    # Other tags on the version (MLflow's own, another model's below) are left alone.
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def parse(cls, tags: Mapping[str, str] | None, where: str = "model version") -> Self:
        """Read and check this model's tags from a version's tags.

        Args:
            tags: The version's tags (`ModelVersion.tags`: text values).
            where: How the version is named in an error, e.g. "buyer-quality version 3".

        Raises:
            TagError: A required tag is missing, or a tag cannot be read as the contract says.
        """
        try:
            return cls.model_validate(dict(tags or {}))
        except ValidationError as exc:
            problems: dict[str, str] = {}  # the first problem of each tag
            for err in exc.errors(include_url=False, include_input=False):
                key = str(err["loc"][0]) if err["loc"] else "?"
                message = err["msg"].removeprefix("Value error, ")
                problems.setdefault(key, "missing" if err["type"] == "missing" else message)
            listed = "; ".join(f"tag {key}: {problem}" for key, problem in problems.items())
            raise TagError(f"{where}: {listed}") from None

    def to_tags(self) -> dict[str, str]:
        """The tags as MLflow stores them: text, the ones left unset omitted."""
        return {key: _as_text(value) for key, value in self.model_dump(exclude_none=True).items()}


class ModelVersionTags(_VersionTags):
    """Written by training when it registers a version; read by serving and the gate."""

    threshold: float = Field(
        allow_inf_nan=False,
        description="A buyer is premium iff the score (predicted P(bad)) is at or below it.",
    )
    feature_columns: tuple[str, ...] = Field(
        description="The Booster's input columns in order, as a JSON list (not empty)."
    )
    # Empty when unknown: serving then cannot check it against the online store's.
    feature_set_version: str = Field(
        default="", description="The features' FEATURE_SET_VERSION it was trained on."
    )
    data_window: str | None = Field(
        default=None, description="The as-of dates it was trained and tested on: first/last."
    )
    target_bad_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="The premium bad rate its threshold was chosen for (on validation).",
    )
    data_fingerprint: str | None = Field(
        default=None, description="sha256 of the log's table files it was trained on."
    )
    label_horizon_days: int | None = Field(
        default=None, ge=1, description="H: refund requests in (T, T+H] made the label."
    )
    label_maturity_days: int | None = Field(
        default=None, ge=0, description="M: confirmations before T+H+M made the label."
    )
    # Absent on versions registered before the search: those are all LightGBM Boosters.
    model_family: Literal["lightgbm", "logistic"] | None = Field(
        default=None,
        description="The family the model search chose (its MLmodel file says it too, and "
        "is what serving follows).",
    )
    # Absent on versions registered before profiles: no factors, drift "no reference".
    reference_profile: str | None = Field(
        default=None,
        description="The artifact of the version's run holding its training population "
        "(modelcontract.profile.ReferenceProfile).",
    )

    @field_validator("feature_columns", mode="before")
    @classmethod
    def _list_of_names(cls, value: object) -> object:
        if isinstance(value, str):  # read from MLflow (training builds it from a list)
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("not JSON (a list of column names is)") from None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("not a list of column names")
        if not value:
            raise ValueError("an empty list (a model has at least one input)")
        return tuple(value)


class GateTags(_VersionTags):
    """Written by the promotion gate on the version it judged."""

    gate_verdict: GateVerdict = Field(description="What the gate decided for this version.")
    gate_run_id: str = Field(description="The MLflow run that judged it (figures, reasons).")
    gate_reason: str | None = Field(
        default=None, description="Why, in the operator's words (e.g. for a forced promotion)."
    )
    model_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the model file the gate judged (the Booster's, or the linear "
        "model's document); serving checks it.",
    )
    # Absent on versions judged before the bootstrap.
    gate_intervals: str | None = Field(
        default=None,
        description="The paired bootstrap's intervals the verdict read, as JSON: for each "
        "model compared, [estimate, low, high] of the AUC and coverage differences.",
    )

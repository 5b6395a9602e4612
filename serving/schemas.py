"""The API's request and answer shapes (pydantic). Money is integer fen, never a float."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,2})?")
_ISO_DATE = re.compile(r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]")
# Unicode categories that display as nothing or attach to the character before; and the
# letters that are blank (Hangul fillers, the blank Braille pattern).
_INVISIBLE = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Me", "Zl", "Zp"})
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")

# `requested_at`'s years, as written (before the offset is applied): what the API takes.
FIRST_YEAR, LAST_YEAR = 2000, 2099
REQUESTED_AT_PATTERN = r"^20[0-9]{2}-"

OrderStatus = Literal["unpaid", "paid_unshipped", "shipped", "delivered", "completed", "cancelled"]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]


def _fen_text(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


# What a client sends: a decimal string of at least 0.01 with at most two decimals (the
# pattern is exactly what `Order._parse_amount` accepts, so a generated client and
# schemathesis send what is taken).
AMOUNT_PATTERN = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(\.[0-9]{1,2})?)$"
PaidFen = Annotated[
    int,
    PlainSerializer(_fen_text, return_type=str),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["299.99"]}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Order(_Strict):
    """The order as the platform backend shows it at the moment of the request."""

    order_id: Id
    buyer_id: Id
    shop_id: Id
    category: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    # Strict: only JSON true/false. Lax parsing would read 0, "false" or "no" as False,
    # and an approval should not rest on guessing what a malformed flag meant.
    is_virtual: StrictBool
    is_custom: StrictBool
    paid_amount: PaidFen = Field(
        description="Actually-paid CNY as a decimal string with at most two decimals, "
        'e.g. "299.99"; held as integer fen.'
    )
    currency: Literal["CNY"]
    status: OrderStatus
    tracking_number: Annotated[str, StringConstraints(max_length=64)] | None = None

    @field_validator("category")
    @classmethod
    def _visible(cls, value: str) -> str:
        # An excluded category must not get past the list by looking the same: characters
        # that show as nothing (format, control, combining, unassigned, fillers) are refused.
        if not (value.isascii() and value.isprintable()) and any(
            unicodedata.category(c) in _INVISIBLE or c in _FILLERS for c in value
        ):
            raise ValueError("holds an invisible, control or combining character")
        return value

    @field_validator("paid_amount", mode="before")
    @classmethod
    def _parse_amount(cls, value: Any) -> int:
        if not isinstance(value, str):
            raise ValueError('must be a decimal string such as "299.99"')
        if not _AMOUNT.fullmatch(value):
            raise ValueError("must be a non-negative decimal string with at most two decimals")
        whole, _, cents = value.partition(".")
        fen = int(whole) * 100 + int(cents.ljust(2, "0") or 0)
        if fen < 1:
            raise ValueError("must be at least 0.01")
        return fen


class DecisionRequest(_Strict):
    """`POST /v1/refund-decisions`: a buyer's refund request on an order."""

    refund_id: Id
    requested_at: AwareDatetime = Field(
        description="When the buyer asked: ISO 8601 with its offset, a year from "
        f"{FIRST_YEAR} to {LAST_YEAR} as written.",
        json_schema_extra={"format": "date-time", "pattern": REQUESTED_AT_PATTERN},
    )
    kind: Literal["refund_only", "return_and_refund"]
    order: Order

    @field_validator("requested_at", mode="before")
    @classmethod
    def _not_a_number(cls, value: Any) -> Any:
        # An ISO 8601 string with its offset (or a datetime, from Python), not a number
        # that pydantic would read as seconds since the epoch.
        if isinstance(value, int | float) or (
            isinstance(value, str) and not _ISO_DATE.match(value)  # "1749952800" too
        ):
            raise ValueError('must be a date and time with its offset, "2025-06-01T02:00:00Z"')
        return value

    @field_validator("requested_at")
    @classmethod
    def _to_utc(cls, value: AwareDatetime) -> AwareDatetime:
        # Years 1 or 9999 are valid ISO 8601 and nobody's refund: a clock or a client gone
        # wrong, which velocity windows and the audit log's order must not take in.
        if not FIRST_YEAR <= value.year <= LAST_YEAR:
            raise ValueError(f"must be in the years {FIRST_YEAR} to {LAST_YEAR}")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01 at +01:00 is before the first UTC instant
            raise ValueError("is outside the range of dates in UTC") from None


class BatchRequest(BaseModel):
    """`POST /v1/refund-decisions/batch`: up to `max_batch` requests, each judged alone."""

    model_config = ConfigDict(extra="forbid")

    requests: list[Any] = Field(min_length=1, max_length=1000)  # each item judged alone


class ValidBatch(BaseModel):
    """A batch whose every item is valid: the route's fast path, one parse for the whole body.

    Any error sends the route back to `BatchRequest` and item-by-item validation, so the
    answer (a 422 for the body, or one per item) does not depend on this class.
    """

    model_config = ConfigDict(extra="forbid")

    requests: list[DecisionRequest] = Field(min_length=1, max_length=1000)


class Reason(BaseModel):
    """A failed rule."""

    code: str
    message: str


class Factor(BaseModel):
    """A feature that raised the buyer's score, in words (answers for buyers who are not
    premium)."""

    feature: str
    value: float | None = Field(description="The feature's value; null when missing.")
    contribution: float = Field(description="What it added to the score, in log-odds.")
    sentence: str = Field(
        examples=[
            "4 refund-only requests after delivery in the last 90 days, more than 97% of buyers"
        ]
    )


class BuyerScore(BaseModel):
    """The buyer premium: the champion's score and the threshold it is held to; for a buyer
    who is not premium, the factors that raised the score most (when the model version has
    a reference profile)."""

    premium: bool
    score: float | None
    threshold: float | None
    factors: list[Factor] | None = None


class ModelRef(BaseModel):
    """The registered model version that scored the buyer."""

    name: str
    version: str | None


class DecisionResponse(BaseModel):
    """The answer; `note` is present only on `auto_approve`."""

    refund_id: str
    decision: Literal["auto_approve", "manual_review"]
    reasons: list[Reason]
    buyer: BuyerScore
    model: ModelRef
    policy_version: str
    note: str | None = None
    decided_at: str
    replayed: bool


class BatchItem(BaseModel):
    """One batch item's answer: `status` is the HTTP status it would have had alone."""

    index: int
    status: int
    decision: DecisionResponse | None = None
    error: Any = None


class BatchResponse(BaseModel):
    """A result per request, in order."""

    results: list[BatchItem]


class RevocationChange(_Strict):
    """Why an admin revokes or restores a buyer."""

    reason: Text


class ShopEligibilityChange(_Strict):
    """An admin's decision on a shop's eligibility, and why."""

    eligible: StrictBool  # JSON true/false only: "yes", 1 or "on" are refused, not guessed
    reason: Text

"""The business policy as a versioned config file (serving/policy.yaml), typed and frozen."""

from __future__ import annotations

import unicodedata
from importlib import resources
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MinHistory(_Frozen):
    """How much history a buyer needs before the model's score is trusted."""

    orders: int = Field(ge=0)
    account_age_days: int = Field(ge=0)


class Velocity(_Frozen):
    """Auto-approval limits per buyer, over rolling windows ending at the decision."""

    max_auto_approvals_per_day: int = Field(ge=0)
    max_auto_approvals_per_30_days: int = Field(ge=0)


class ShopEligibility(_Frozen):
    """Thresholds on the shop metrics that decide which shops get the service."""

    min_shop_age_days: int = Field(ge=0)
    ship_deadline_hours: float = Field(gt=0)
    max_late_shipment_rate: float = Field(ge=0, le=1)
    max_tracking_after_refund_rate: float = Field(ge=0, le=1)
    max_dispute_rate: float = Field(ge=0, le=1)
    min_events_for_rate: int = Field(ge=0)


class LossBudget(_Frozen):
    """Caps on the expected loss auto-approved (P(bad) x paid amount, in fen) over rolling
    windows ending at the decision; a cap left out (null) is not applied."""

    max_per_shop_day_fen: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_per_buyer_30_days_fen: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @property
    def active(self) -> bool:
        """Whether any cap is set."""
        return self.max_per_shop_day_fen is not None or self.max_per_buyer_30_days_fen is not None


def category_key(category: str) -> str:
    """A category as the exclusion list compares it: NFKC-normalized (full-width letters as
    ASCII), trimmed, case-folded. (A request's category with invisible characters is refused
    before it gets here: `serving.schemas.Order`.)"""
    return unicodedata.normalize("NFKC", category).strip().casefold()


class Policy(_Frozen):
    """The unshipped fast-refund policy; `version` is in every answer and audit record."""

    version: str = Field(min_length=1)
    amount_limit_fen: int = Field(gt=0)
    excluded_categories: frozenset[str]
    # The closed list: the category codes the service covers. Any other category (unknown,
    # misspelt, or a look-alike such as "\u0441ustom" with a Cyrillic "с") goes to manual
    # review: a denylist on free text lets through whatever it did not think of.
    allowed_categories: frozenset[str] = Field(min_length=1)
    # The oldest online store snapshot that may serve, in days after its as-of date: past
    # it, decisions that need the store are SCORE_UNAVAILABLE and /readyz is not ready (a
    # materialize that stopped running must not keep serving last month's buyers).
    max_snapshot_age_days: float = Field(gt=0, allow_inf_nan=False)
    min_history: MinHistory
    velocity: Velocity
    shop_eligibility: ShopEligibility
    revoke_on_confirmed_abuse: bool = True
    loss_budget: LossBudget = LossBudget()
    # The highest premium threshold (P(bad)) a model may carry: above it serving refuses the
    # model, and no decision approves on it.
    max_premium_threshold: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    # The population stability index above which `python -m serving drift` alerts (exits 1):
    # 0.25 is the usual "significant shift" line (0.1-0.25: moderate), for any feature or the
    # score against the model version's training population (`serving.drift`).
    drift_psi_alert: float = Field(default=0.25, gt=0, allow_inf_nan=False)
    # Features whose PSI is reported but never alerts: ages, which grow with time whatever
    # buyers do (the live population is always older than the one a model was trained on).
    drift_exempt_features: frozenset[str] = frozenset()

    @field_validator("excluded_categories", "allowed_categories")
    @classmethod
    def _normalized(cls, categories: frozenset[str]) -> frozenset[str]:
        # Held as `category_key` gives them: "Game_Top_Up " is game_top_up.
        return frozenset(category_key(c) for c in categories)

    @model_validator(mode="after")
    def _disjoint(self) -> Policy:
        both = self.allowed_categories & self.excluded_categories
        if both:
            raise ValueError(f"categories both allowed and excluded: {', '.join(sorted(both))}")
        return self


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file.

    Args:
        path: A YAML policy file; None reads the packaged `serving/policy.yaml`.

    Raises:
        ValueError: If the file is not valid YAML or breaks the policy schema.
        OSError: If the file cannot be read.
    """
    if path is None:
        text = resources.files("serving").joinpath("policy.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    name = path or "serving/policy.yaml"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"policy file {name}: not YAML: {exc}") from exc
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'the file'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ValueError(f"policy file {name}: {problems}") from exc

"""The champion's scores for the online store's feature vectors, or none where untrusted.

A score is used only when the champion was trained on the store's feature set, the store
holds every column the champion takes, and the model returns one probability in [0, 1] per
row; anything else fails closed (no score, so SCORE_UNAVAILABLE) and is counted in
`fastrefund_unavailable{component="scoring"}`.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from serving.factors import top_factors
from serving.metrics import Metrics
from serving.model import Champion
from serving.records import BuyerRecord, ShopRecord, StoreMeta

logger = logging.getLogger("serving")

# Whether the store holds the model's columns, and where (None: in the model's order).
_ColumnIndex = tuple[bool, np.ndarray | None]


class Scorer:
    """Scores buyers with the champion, mapping the store's columns to the model's once per
    model version and snapshot layout."""

    def __init__(self, metrics: Metrics, component: str = "scoring"):
        self._metrics = metrics
        self._component = component  # the `fastrefund_unavailable` label its failures count
        self._columns: tuple[tuple[str, tuple[str, ...]], _ColumnIndex] | None = None

    def scores(
        self,
        champion: Champion | None,
        meta: StoreMeta | None,
        found: list[tuple[BuyerRecord | None, ShopRecord | None]],
    ) -> list[float | None] | None:
        """The champion's score per looked-up buyer (None where it cannot be trusted).

        Returns:
            None when no request can be scored (no champion, no store, or features that do
            not match the champion's); else a score or None per item of `found`.
        """
        if champion is None or meta is None:
            return None
        if champion.feature_set_version and (
            champion.feature_set_version != meta.feature_set_version
        ):
            # Trained on other features than the store holds: skew, so no score at all.
            self._unavailable()
            return None
        usable, index = self._column_index(champion, meta)
        if not usable:
            self._unavailable()
            return None
        width = len(meta.feature_columns)
        rows = [
            i
            for i, (buyer, _) in enumerate(found)
            if buyer is not None and len(buyer.features) == width
        ]
        scores: list[float | None] = [None] * len(found)
        if not rows:
            return scores
        vectors = [found[i][0].features for i in rows]  # type: ignore[union-attr]
        if index is not None:
            vectors = [vector[index] for vector in vectors]
        try:
            predicted = champion.score_rows(vectors)
        except Exception as exc:  # noqa: BLE001 - fail closed on any scoring failure
            self._unavailable()
            logger.error(
                "scoring failed",
                extra={"fields": {"component": self._component, "error": repr(exc)}},
            )
            return scores
        if len(predicted) != len(rows):
            self._unavailable()
            return scores
        for i, value in zip(rows, predicted, strict=True):
            if math.isfinite(value) and 0.0 <= value <= 1.0:
                scores[i] = value
        return scores

    def factors(
        self, champion: Champion, meta: StoreMeta, buyer: BuyerRecord | None
    ) -> list[dict] | None:
        """The features that raised this buyer's score most, in words (`serving.factors`).

        Returns:
            None when the champion cannot explain (no contributions, no reference profile:
            a version from before profiles) or the buyer's vector is not the store's;
            otherwise the factors. Never raises: an explanation that fails is logged and
            the answer goes without it.
        """
        if champion.explain_one is None or champion.profile is None or buyer is None:
            return None
        if len(buyer.features) != len(meta.feature_columns):
            return None
        usable, index = self._column_index(champion, meta)
        if not usable:
            return None
        row = buyer.features if index is None else buyer.features[index]
        try:
            contributions = champion.explain_one(row)
            return top_factors(row, contributions, champion.feature_columns, champion.profile)
        except Exception as exc:  # noqa: BLE001 - the decision stands without its factors
            logger.error("factors failed", extra={"fields": {"error": repr(exc)}})
            return None

    def _unavailable(self) -> None:
        self._metrics.unavailable.labels(component=self._component).inc()

    def _column_index(self, champion: Champion, meta: StoreMeta) -> _ColumnIndex:
        """Where each of the model's input columns sits in the store's vectors (cached).

        Returns:
            (False, None) when the store lacks some of them; (True, None) when the store holds
            them in the model's order (the usual case: the vectors are used as they are);
            else (True, the positions).
        """
        key = (champion.version, meta.feature_columns)
        if self._columns is not None and self._columns[0] == key:
            return self._columns[1]
        position = {name: i for i, name in enumerate(meta.feature_columns)}
        missing = [c for c in champion.feature_columns if c not in position]
        if missing:
            logger.error(
                "the store lacks the model's features",
                extra={"fields": {"model_version": champion.version, "missing": missing[:10]}},
            )
            found: _ColumnIndex = (False, None)
        else:
            order = [position[c] for c in champion.feature_columns]
            same = order == list(range(len(meta.feature_columns)))
            found = (True, None if same else np.array(order))
        self._columns = (key, found)
        return found

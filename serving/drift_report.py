"""`python -m serving drift`: the audit log's scored decisions judged against the training
population of the model version that scored them (`serving.drift`).

Reads the log read-only (SQLite `mode=ro`: never created or changed; a running API keeps
writing), the feature vectors each decision stored and the score it answered with; looks up
the version's reference profile in the registry (or takes one from a file), and draws the
worst series. The adapters (the log, the registry, the plot) are here; the arithmetic is pure,
in `serving.drift`.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelcontract import ReferenceProfile
from serving.audit import AuditUnavailable

# Decisions whose buyer was scored, with the vector they were scored on and its columns.
_SCORED = """
SELECT d.features, s.feature_columns, d.model_version,
       d.response ->> '$.buyer.score', d.response ->> '$.buyer.threshold'
FROM decisions AS d LEFT JOIN snapshots AS s ON s.id = d.snapshot
WHERE d.decided_at >= ?1 AND d.decided_at < ?2
  AND d.response ->> '$.buyer.score' IS NOT NULL AND length(d.features) > 0
"""


@dataclass(frozen=True)
class ScoredRows:
    """One model version's scored decisions from the audit log.

    Attributes:
        version: The model version (None when the log holds no scored decision).
        columns: The features, in the rows' order.
        rows: One vector a decision (NaN where missing or absent from its snapshot).
        scores: The score each decision answered with.
        threshold: The premium threshold they were judged with (the last one seen).
        versions: Scored decisions by version over the whole range.
    """

    version: str | None
    columns: tuple[str, ...]
    rows: np.ndarray
    scores: np.ndarray
    threshold: float | None
    versions: dict[str, int]


def scored_rows(
    path: str | Path,
    since: float | None = None,
    until: float | None = None,
    version: str | None = None,
) -> ScoredRows:
    """The decisions made in [since, until) by `version` (default: the version that scored
    the most of them) whose buyer was scored.

    Raises:
        AuditUnavailable: There is no audit log at `path`, or it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditUnavailable(f"no audit log at {path}")
    bounds = (-math.inf if since is None else since, math.inf if until is None else until)
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            found = conn.execute(_SCORED, bounds).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditUnavailable(f"audit log {path}: {exc}") from exc
    versions = Counter(str(row[2]) for row in found)
    chosen = version
    if chosen is None and versions:
        chosen = versions.most_common(1)[0][0]
    # Vectors and scores grouped by their snapshot's columns (a handful of layouts at most).
    groups: dict[tuple[str, ...], tuple[list[np.ndarray], list[float]]] = {}
    threshold = None
    for vector, columns, row_version, score, row_threshold in found:
        if str(row_version) != chosen:
            continue
        if isinstance(vector, str):  # a log from before snapshots: JSON of names and values
            values = json.loads(vector).get("values") or {}
            names = tuple(values)
            numbers = np.array([math.nan if v is None else v for v in values.values()])
        elif columns:
            names, numbers = tuple(json.loads(columns)), np.frombuffer(vector, dtype="<f8")
        else:
            continue
        vectors, scores = groups.setdefault(names, ([], []))
        vectors.append(numbers)
        scores.append(float(score))
        threshold = float(row_threshold) if row_threshold is not None else threshold
    every = tuple(dict.fromkeys(name for names in groups for name in names))
    position = {name: i for i, name in enumerate(every)}
    blocks = []
    for names, (vectors, _) in groups.items():
        block = np.full((len(vectors), len(every)), math.nan)
        block[:, [position[n] for n in names]] = np.stack(vectors)
        blocks.append(block)
    return ScoredRows(
        chosen,
        every,
        np.concatenate(blocks) if blocks else np.empty((0, len(every))),
        np.array([score for _, scores in groups.values() for score in scores]),
        threshold,
        dict(versions),
    )


def registry_reference(
    tracking_uri: str, name: str, version: str
) -> tuple[ReferenceProfile | None, str]:
    """A registered version's reference profile, or None and why not ("no reference": a
    version registered before profiles, or one the registry does not have).

    Raises:
        Exception: The registry cannot be asked (MLflow's own error).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None, f"{name} version {version} is not in the registry"
        raise
    artifact = (found.tags or {}).get("reference_profile")
    if not artifact or not found.run_id:
        return None, f"{name} version {version} was registered without a reference profile"
    try:
        with tempfile.TemporaryDirectory(prefix="fastrefund-profile-") as tmp:
            local = download_artifacts(
                run_id=found.run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri
            )
            profile = ReferenceProfile.model_validate_json(Path(local).read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - reported as "no reference", never a crash
        return None, f"{name} version {version}'s reference profile is unreadable: {exc}"
    return profile, ""


def plot_worst(
    out: Path,
    report_series: list[tuple[str, float]],
    alert: float,
    exempt: frozenset[str],
    title: str,
    top: int = 12,
) -> None:
    """A bar chart of the `top` worst series' PSI with the alert line, written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    from features.io import atomic_path

    worst = report_series[:top][::-1]
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(worst) + 1.5))
    colours = [
        "#bbbbbb" if n in exempt else ("#c0392b" if v > alert else "#2e86c1") for n, v in worst
    ]
    axes.barh([n for n, _ in worst], [v for _, v in worst], color=colours)
    axes.axvline(alert, color="#c0392b", linestyle="--", label=f"alert (PSI {alert:g})")
    if any(n in exempt for n, _ in worst):
        from matplotlib.patches import Patch

        axes.add_artist(
            axes.legend(
                handles=[Patch(color="#bbbbbb", label="exempt: never alerts")], loc="center right"
            )
        )
    axes.set_xlabel("population stability index (live vs training population)")
    axes.set_title(title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100)
    plt.close(figure)

"""The champion model: loaded once from the MLflow registry, scored as a native Booster or,
when logistic regression won the model search, as its JSON document (`modelcontract.linear`)."""

from __future__ import annotations

import ctypes
import logging
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelcontract import CHAMPION, MODEL_NAME, GateTags, ModelVersionTags, ReferenceProfile
from modelcontract.artifact import LINEAR_FAMILY, ArtifactError, file_sha256, model_file
from modelcontract.linear import LinearModel

logger = logging.getLogger("serving")

# LightGBM C API constants (c_api.h).
_PREDICT_NORMAL = 0  # probabilities, the objective's transform applied
_PREDICT_LEAF_INDEX = 2  # the leaf of every tree
_DTYPE_FLOAT64 = 1


PARALLEL_ROWS = 64  # from this many rows a matrix is scored on `Champion.batch_threads`


class ModelUnavailable(RuntimeError):
    """No usable champion: missing alias, missing tags, or an unreadable model."""


@dataclass(frozen=True)
class Champion:
    """A registered model version ready to score, with what it was promoted with.

    Score = predicted probability that the buyer is bad; premium iff score <= threshold.
    """

    name: str
    version: str
    # A lightgbm.Booster or a modelcontract.linear.LinearModel (same `predict`); tests use
    # stand-ins with the same `predict`.
    booster: Any
    threshold: float
    feature_columns: tuple[str, ...]
    feature_set_version: str
    loaded_at: float = field(default_factory=time.time)
    score_one: Callable[[np.ndarray], float] | None = None  # a fast path for a single row
    # Threads for a matrix of at least `PARALLEL_ROWS` rows (a batch): LightGBM splits the rows
    # between them. 1,000 rows of the 300-tree champion, alone in a process: 28 ms on one
    # thread, 15 ms on two; but in the server on this 2-core machine, with the client and the
    # checkpoint thread on the other core, two threads measured no faster (8,700-9,100 vs
    # 9,200-9,500 batch decisions/s), so one is the default. Small inputs always use one.
    batch_threads: int = 1
    # The features' contributions to one row's score (log-odds; the last is the expected
    # value), for the factors shown to a buyer who is not premium; None: no factors.
    explain_one: Callable[[np.ndarray], np.ndarray] | None = None
    # The training population (quantiles and bins); None for a version without one.
    profile: ReferenceProfile | None = None
    family: str = "lightgbm"  # or "logistic" (modelcontract.artifact's family names)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Score feature rows (in `feature_columns` order) with the native Booster."""
        if self.score_one is not None and len(rows) < PARALLEL_ROWS:
            # A few rows (one request, or the requests of one event-loop turn): the fast
            # single-row path, row by row; after the first row the trees are in cache.
            return np.array([self.score_one(row) for row in rows], dtype=np.float64)
        threads = self.batch_threads if len(rows) >= PARALLEL_ROWS else 1
        return np.asarray(self.booster.predict(rows, num_threads=threads), dtype=np.float64)

    def score_rows(self, rows: Sequence[np.ndarray]) -> list[float]:
        """`score` for rows given one by one, as the store returns them; a list of floats."""
        if self.score_one is not None and len(rows) < PARALLEL_ROWS:
            return [self.score_one(row) for row in rows]
        scores = self.score(np.stack(rows))
        if scores.shape != (len(rows),):  # e.g. a model with several outputs a row
            raise ValueError(f"expected one score a row, got shape {scores.shape}")
        return scores.tolist()


class SingleRowScorer:
    """LightGBM's fast single-row prediction, set up once for a Booster.

    `Booster.predict` converts its input, parses its parameters and prepares a predictor on
    every call: ~60 us for one row, three times the tree walk itself. LightGBM's C API can do
    that preparation once (`LGBM_BoosterPredictForMatSingleRowFastInit`) and then score a row
    with `LGBM_BoosterPredictForMatSingleRowFast`; this calls them through the library handle
    the lightgbm package loaded, as its own code does. The answer equals `Booster.predict`
    (see the tests).
    """

    predict_type = _PREDICT_NORMAL
    outputs = 1  # numbers a row

    def __init__(self, booster: Any):
        from lightgbm.basic import _LIB, _safe_call  # LightGBM's own ctypes handle

        self._check = _safe_call
        self._booster = booster  # the C config points into it: keep it alive as long
        self.n_features = int(booster.num_feature())
        if booster.num_model_per_iteration() != 1:
            raise ValueError("one output per row expected (a binary or regression model)")
        # The iterations `Booster.predict` uses by default: the best one if training set it.
        iterations = int(getattr(booster, "best_iteration", 0) or 0)
        config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(self.predict_type),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(iterations if iterations > 0 else -1),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(self.n_features),
                b"num_threads=1",
                ctypes.byref(config),
            )
        )
        self._config = config
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, config)
        # The call itself through a handle of our own on the same library, with its argument
        # types declared (LightGBM's handle is left as it is): pointers pass as plain ints and
        # the outputs are allocated once, which takes ~10 us off every row (cold caches).
        predict = ctypes.CDLL(_LIB._name).LGBM_BoosterPredictForMatSingleRowFast
        predict.argtypes = [ctypes.c_void_p] * 4
        predict.restype = ctypes.c_int
        self._predict = predict
        self._result, self._length = self._buffer(), ctypes.c_int64()
        self._outputs = (ctypes.addressof(self._length), ctypes.addressof(self._result))

    def _buffer(self) -> Any:
        return ctypes.c_double()

    def __call__(self, row: np.ndarray) -> float:
        """The probability for one feature row (float64, in the model's column order).

        Not for concurrent use: one scorer answers one row at a time (the event loop).

        Raises:
            ValueError: The row does not have the model's number of features.
        """
        if row.dtype != np.float64 or not row.flags.c_contiguous:
            row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {row.shape}")
        if self._predict(self._config.value, row.ctypes.data, *self._outputs) != 0:
            self._check(-1)  # raises LightGBM's error for the failed call
        return self._result.value


class SingleRowLeaves(SingleRowScorer):
    """The leaf each tree sends one row to, through the same fast single-row C API (what
    `Booster.predict(rows, pred_leaf=True)` gives for the row)."""

    predict_type = _PREDICT_LEAF_INDEX

    def _buffer(self) -> Any:
        return (ctypes.c_double * self.trees)()

    def __init__(self, booster: Any):
        iterations = int(getattr(booster, "best_iteration", 0) or 0)
        self.trees = iterations if iterations > 0 else int(booster.current_iteration())
        super().__init__(booster)

    def __call__(self, row: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Each tree's leaf index for one feature row (float64, in the model's column order).

        Raises:
            ValueError: The row does not have the model's number of features.
        """
        if row.dtype != np.float64 or not row.flags.c_contiguous:
            row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {row.shape}")
        if self._predict(self._config.value, row.ctypes.data, *self._outputs) != 0:
            self._check(-1)
        return np.frombuffer(self._result, dtype=np.float64).astype(np.intp)


class PathContributions:
    """Each feature's contribution to one row's score (log-odds) along the row's paths
    through the trees: at every split the row passes, the change in the node's value is
    credited to the split's feature (Saabas's decomposition, as `treeinterpreter` computes
    it). The contributions and the trees' expected value (the last number) sum to the raw
    score exactly, as LightGBM's `pred_contrib` (tree SHAP) does.

    Why not `pred_contrib`: tree SHAP costs O(trees x leaves x depth^2) a row, ~1 ms for the
    300-tree champion, twice the whole decision's budget (benchmarks/bench_operations.py). A
    path's credits are fixed by its leaf, so they are tabled once per model (a row per leaf)
    and a row costs one leaf lookup (the fast single-row API, ~20 us) and a sum of one row a
    tree. Both credit the features the row's splits test; they differ in how they share a
    change between features tested on one path (SHAP averages over orders).
    """

    def __init__(self, booster: Any):
        self._leaves = SingleRowLeaves(booster)
        self._width = self._leaves.n_features + 1  # the features, then the expected value
        dump = booster.dump_model(num_iteration=self._leaves.trees)
        paths: list[list[tuple[int, float]]] = []  # a leaf's credits, leaf by leaf
        offsets = []
        for tree in dump["tree_info"][: self._leaves.trees]:
            offsets.append(len(paths))
            leaves: list[list[tuple[int, float]]] = [[] for _ in range(int(tree["num_leaves"]))]
            self._credit(tree["tree_structure"], self._width - 1, leaves)
            paths.extend(leaves)
        # A row a leaf: a row's credits are one gather of a row a tree and a sum (~30 us for
        # 300 trees; a padded sparse form and a bincount measured slower).
        self._table = np.zeros((len(paths), self._width))
        for i, path in enumerate(paths):
            for feature, credit in path:
                self._table[i, feature] += credit
        self._offsets = np.array(offsets, dtype=np.intp)

    @staticmethod
    def _credit(root: dict, bias_slot: int, leaves: list[list[tuple[int, float]]]) -> None:
        """Fill each leaf's list with the credits of the path to it (iteratively: deep trees);
        the root's value goes to `bias_slot`."""
        if "leaf_value" in root:  # a tree of one leaf: all expected value
            leaves[0].append((bias_slot, float(root["leaf_value"])))
            return
        stack = [(root, [(bias_slot, float(root["internal_value"]))])]
        while stack:
            node, credits = stack.pop()
            for side in ("left_child", "right_child"):
                child = node[side]
                value = child["leaf_value"] if "leaf_value" in child else child["internal_value"]
                here = [*credits, (int(node["split_feature"]), value - node["internal_value"])]
                if "leaf_value" in child:
                    leaves[child["leaf_index"]] = here
                else:
                    stack.append((child, here))

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """The contributions of one row's features, then the expected value.

        Raises:
            ValueError: The row does not have the model's number of features.
        """
        return np.take(self._table, self._offsets + self._leaves(row), axis=0).sum(axis=0)


def _contributions(booster: Any) -> PathContributions | None:
    """Contributions for the factors when they can be set up; otherwise no factors."""
    try:
        return PathContributions(booster)
    except Exception as exc:  # noqa: BLE001 - explanations must not take the model down
        logger.warning("contributions unavailable", extra={"fields": {"error": repr(exc)}})
        return None


def _reference_profile(
    tracking_uri: str, run_id: str | None, artifact: str | None, where: str
) -> ReferenceProfile | None:
    """The version's training population, or None (none recorded, or unreadable: logged)."""
    if not artifact or not run_id:
        return None
    from mlflow.artifacts import download_artifacts

    try:
        with tempfile.TemporaryDirectory(prefix="fastrefund-profile-") as tmp:
            local = download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri
            )
            with open(local, encoding="utf-8") as file:
                return ReferenceProfile.model_validate_json(file.read())
    except Exception as exc:  # noqa: BLE001 - a model without its profile still scores
        logger.warning(
            "reference profile unreadable: no factors and no drift reference for this version",
            extra={"fields": {"model": where, "error": f"{type(exc).__name__}: {exc}"}},
        )
        return None


def _single_row_scorer(booster: Any) -> SingleRowScorer | None:
    """The fast path when it can be set up; otherwise `Booster.predict` serves alone."""
    try:
        return SingleRowScorer(booster)
    except Exception as exc:  # noqa: BLE001 - an optimization must not take the model down
        logger.warning(
            "fast single-row scoring unavailable", extra={"fields": {"error": repr(exc)}}
        )
        return None


def champion_version(
    tracking_uri: str, name: str = MODEL_NAME, alias: str = CHAMPION
) -> str | None:
    """The version `models:/{name}@{alias}` points at now; None when the alias is not set.

    One registry query (no download): cheap enough to ask every minute.

    Raises:
        Exception: The registry cannot be asked (MLflow's own error).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such model or alias yet: nothing to load
        raise


def load_champion(
    tracking_uri: str,
    name: str = MODEL_NAME,
    alias: str = CHAMPION,
    max_threshold: float = 0.5,
) -> Champion:
    """Load `models:/{name}@{alias}` and the tags it was registered and promoted with, trusting
    nothing the registry hands over.

    Refused (ModelUnavailable) unless: the contract's `ModelVersionTags` read (a non-empty
    list of feature columns) with a threshold in (0, `max_threshold`]; the gate's `GateTags`
    say `promoted` or `forced` (an alias set by hand on a version no gate run judged is
    refused; a forced promotion is the gate's record of an operator's decision); the `MLmodel`
    file names a native LightGBM Booster or the linear document
    (`modelcontract.artifact.model_file`, read before any model code runs); and the model
    file's sha256 is the one the gate recorded. The Booster is then read from its text model
    file by LightGBM itself, the linear model's numbers by pydantic from JSON: no unpickling,
    whatever MLflow's own loader would do for another class.

    The tracking URI is passed explicitly; no global MLflow state is changed.

    Args:
        tracking_uri: The registry.
        name: The registered model.
        alias: The alias to follow.
        max_threshold: The policy's `max_premium_threshold`.

    Raises:
        ModelUnavailable: The alias is not set, a tag is missing or refused, the files are not
            a Booster's, or the model does not load.
    """
    # Imported here: MLflow is heavy and nothing may load at import time.
    import lightgbm as lgb
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    where = f"models:/{name}@{alias}"
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        label = f"version {version.version}"
        tags = ModelVersionTags.parse(version.tags, label)
        gate = GateTags.parse(version.tags, label)
    except Exception as exc:  # noqa: BLE001 - any failure means there is no usable champion
        raise ModelUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
    if gate.gate_verdict not in ("promoted", "forced"):
        raise ModelUnavailable(
            f"{where}: {label} was refused by the promotion gate (run {gate.gate_run_id}); "
            "promote it with the gate (--force records why) rather than moving the alias"
        )
    if not 0.0 < tags.threshold <= max_threshold:
        raise ModelUnavailable(
            f"{where}: {label}'s threshold {tags.threshold} is outside (0, {max_threshold}] "
            "(the policy's max_premium_threshold)"
        )
    try:
        # The version's own storage location: resolving "models:/..." would go through the
        # global registry URI instead of this one.
        location = client.get_model_version_download_uri(name, version.version)
        with tempfile.TemporaryDirectory(prefix="fastrefund-model-") as tmp:
            local = download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri
            )
            family, path = model_file(local)
            digest = file_sha256(path)
            if digest != gate.model_sha256:
                raise ArtifactError(
                    f"the model file's sha256 is {digest}, the gate recorded {gate.model_sha256}"
                )
            if family == LINEAR_FAMILY:
                booster: Any = LinearModel.from_json(path.read_bytes())
            else:
                booster = lgb.Booster(model_file=str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
    columns = tags.feature_columns
    n_features = getattr(booster, "num_feature", lambda: len(columns))()
    if n_features != len(columns):
        raise ModelUnavailable(
            f"{where}: the Booster takes {n_features} features, "
            f"the feature_columns tag lists {len(columns)}"
        )
    if isinstance(booster, LinearModel):
        if booster.feature_name() != list(columns):
            raise ModelUnavailable(
                f"{where}: the linear model's feature columns differ from its feature_columns tag"
            )
        # Its own single-row path (a dot product) and its terms as the factors' contributions.
        score_one: Callable[[np.ndarray], float] | None = booster.score_one
        explain_one: Callable[[np.ndarray], np.ndarray] | None = booster.contributions
    else:
        score_one, explain_one = _single_row_scorer(booster), _contributions(booster)
    champion = Champion(
        name,
        str(version.version),
        booster,
        tags.threshold,
        columns,
        tags.feature_set_version,
        score_one=score_one,
        explain_one=explain_one,
        profile=_reference_profile(
            tracking_uri,
            getattr(version, "run_id", None),
            tags.reference_profile,
            f"{name} version {version.version}",
        ),
        family=LINEAR_FAMILY if isinstance(booster, LinearModel) else "lightgbm",
    )
    try:
        probe = np.zeros((2, len(columns)))  # fail now, not on the first request
        champion.score(probe[:1])
        champion.score(probe)
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(f"{where}: cannot score: {exc}") from exc
    return champion

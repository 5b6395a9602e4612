"""The registered model's files: which one is the Booster, checked before anything reads it.

A version's artifacts are an MLflow model folder: its `MLmodel` file names the flavour, the
class and the data file. MLflow's own loader follows that file, and for a class other than
a native Booster it unpickles (code execution for whoever can write to the registry).
`booster_file` reads `MLmodel` as plain YAML and accepts only the one shape training logs:
the `lightgbm` flavour, class `lightgbm.basic.Booster`, a data file inside the folder and no
code folder; LightGBM then reads that file as its text model format (no pickle anywhere).
`file_sha256` is the digest the promotion gate records and serving checks at load.

The second family, logistic regression, is logged as a JSON document of its numbers
(`modelcontract.linear`) under the flavour `fastrefund_linear` with no python_function
flavour and no code: `linear_file` checks that shape. `model_file` accepts either shape and
says which family it is, so the gate and serving take one path for both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

FLAVOUR = "lightgbm"
BOOSTER_CLASS = "lightgbm.basic.Booster"
# The pyfunc loader a Booster is logged with; any other module would run its own code.
PYFUNC_LOADER = "mlflow.lightgbm"
LINEAR_FLAVOUR = "fastrefund_linear"
LINEAR_DATA = "linear.json"
# The families a registered version can be, as `model_file` names them.
LIGHTGBM_FAMILY = "lightgbm"
LINEAR_FAMILY = "logistic"


class ArtifactError(ValueError):
    """A model folder is not a native LightGBM Booster as training logs it."""


def _mlmodel(folder: Path) -> dict:
    try:
        described = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{folder}: MLmodel unreadable: {exc}") from exc
    flavours = described.get("flavors") if isinstance(described, dict) else None
    if not isinstance(flavours, dict):
        raise ArtifactError(f"{folder}: MLmodel lists no flavours")
    return flavours


def _data_path(folder: Path, data: object, flavour: str) -> Path:
    if not isinstance(data, str) or not data:
        raise ArtifactError(f"{folder}: MLmodel names no data file for {flavour}")
    path = (folder / data).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise ArtifactError(f"{folder}: MLmodel's data file {data!r} is not a file in the folder")
    return path


def linear_file(model_dir: str | Path) -> Path:
    """The linear model's JSON document in a downloaded model folder, after checking `MLmodel`:
    the `fastrefund_linear` flavour alone (no python_function loader, no code).

    Raises:
        ArtifactError: `MLmodel` is missing or unreadable, lists another flavour beside it,
            carries code, or points at a data file outside the folder or missing.
    """
    folder = Path(model_dir)
    flavours = _mlmodel(folder)
    flavour = flavours.get(LINEAR_FLAVOUR)
    if not isinstance(flavour, dict):
        raise ArtifactError(f"{folder}: MLmodel has no {LINEAR_FLAVOUR} flavour")
    others = sorted(set(flavours) - {LINEAR_FLAVOUR})
    if others:
        raise ArtifactError(
            f"{folder}: MLmodel lists {', '.join(others)} beside {LINEAR_FLAVOUR} (a linear "
            "model is read as its JSON document only)"
        )
    if flavour.get("code"):
        raise ArtifactError(f"{folder}: MLmodel carries code; a linear model needs none")
    return _data_path(folder, flavour.get("data"), LINEAR_FLAVOUR)


def model_file(model_dir: str | Path) -> tuple[str, Path]:
    """The family (`LIGHTGBM_FAMILY` or `LINEAR_FAMILY`) and checked data file of a
    downloaded model folder.

    Raises:
        ArtifactError: As `booster_file` or `linear_file` for the flavour `MLmodel` names.
    """
    folder = Path(model_dir)
    if LINEAR_FLAVOUR in _mlmodel(folder):
        return LINEAR_FAMILY, linear_file(folder)
    return LIGHTGBM_FAMILY, booster_file(folder)


def booster_file(model_dir: str | Path) -> Path:
    """The Booster's model file in a downloaded MLflow model folder, after checking `MLmodel`.

    Args:
        model_dir: The folder holding `MLmodel` (a version's downloaded artifacts).

    Raises:
        ArtifactError: `MLmodel` is missing or unreadable, names another flavour, class or
            loader, carries code, or points at a data file outside the folder or missing.
    """
    folder = Path(model_dir)
    flavours = _mlmodel(folder)
    if not isinstance(flavours.get(FLAVOUR), dict):
        raise ArtifactError(f"{folder}: MLmodel has no {FLAVOUR} flavour")
    flavour = flavours[FLAVOUR]
    if flavour.get("model_class", BOOSTER_CLASS) != BOOSTER_CLASS:
        raise ArtifactError(
            f"{folder}: MLmodel's model_class is {flavour.get('model_class')!r}, not "
            f"{BOOSTER_CLASS} (another class would be unpickled)"
        )
    pyfunc = flavours.get("python_function")
    if isinstance(pyfunc, dict) and pyfunc.get("loader_module", PYFUNC_LOADER) != PYFUNC_LOADER:
        raise ArtifactError(
            f"{folder}: MLmodel's loader_module is {pyfunc.get('loader_module')!r}, "
            f"not {PYFUNC_LOADER}"
        )
    if flavour.get("code") or (isinstance(pyfunc, dict) and pyfunc.get("code")):
        raise ArtifactError(f"{folder}: MLmodel carries code; a Booster needs none")
    return _data_path(folder, flavour.get("data"), FLAVOUR)


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

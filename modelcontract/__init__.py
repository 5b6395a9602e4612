"""The registered model's contract: what training writes into MLflow and serving reads back.

One home for every name both sides use, so neither copies a literal from the other:

- where the registry is: `tracking_uri` (`MLFLOW_TRACKING_URI`, else `DEFAULT_TRACKING_URI`)
  and `redact_uri`, the only way a URI is shown;
- the registered model `MODEL_NAME` and its aliases `CHALLENGER`, `CHAMPION`, `PREVIOUS`;
- the reference profile of a version's training population (`ReferenceProfile`, the
  artifact `PROFILE_ARTIFACT`), read for explanations and drift;
- the tags of a model version, parsed and checked by `ModelVersionTags` (written at
  registration) and `GateTags` (written by the promotion gate). A new tag is one field there.

Pure Python and pydantic: it imports neither MLflow nor any package of the project, so
`features`, `training` and `serving` can all depend on it (features does not need to).
"""

from modelcontract.names import ALIASES, CHALLENGER, CHAMPION, MODEL_NAME, PREVIOUS
from modelcontract.profile import PROFILE_ARTIFACT, BinnedProfile, ReferenceProfile
from modelcontract.tags import GATE_VERDICTS, GateTags, ModelVersionTags, TagError
from modelcontract.tracking import DEFAULT_TRACKING_URI, TRACKING_URI_ENV, redact_uri, tracking_uri

__all__ = [
    "ALIASES",
    "PROFILE_ARTIFACT",
    "BinnedProfile",
    "ReferenceProfile",
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_TRACKING_URI",
    "GATE_VERDICTS",
    "MODEL_NAME",
    "PREVIOUS",
    "TRACKING_URI_ENV",
    "GateTags",
    "ModelVersionTags",
    "TagError",
    "redact_uri",
    "tracking_uri",
]

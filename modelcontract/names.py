"""The registered model's name and the aliases that say which version does what."""

from __future__ import annotations

MODEL_NAME = "buyer-quality"

# Aliases, never MLflow's deprecated stages. Training gives each new version CHALLENGER; the
# promotion gate moves CHAMPION (what serving loads) and gives the version it replaces
# PREVIOUS (the rollback target).
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous"
ALIASES = (CHALLENGER, CHAMPION, PREVIOUS)

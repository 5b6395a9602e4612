"""schemathesis hooks for the decision API (SCHEMATHESIS_HOOKS=benchmarks/schemathesis_hooks.py).

The document's one custom format, `visible-text` (an order's category): strings of letters,
digits, punctuation, symbols and spaces, as `serving.schemas.Order` accepts them.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

FILLERS = "\u115f\u1160\u3164\uffa0\u2800"  # blank letters the API refuses too

schemathesis.openapi.format(
    "visible-text",
    st.text(
        st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters=FILLERS),
        min_size=1,
        max_size=64,
    ),
)

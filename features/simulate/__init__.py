"""The transaction-log simulator: a synthetic platform whose buyers have hidden types.

The world is one a risk analyst would recognise. Buyers are ordinary, honest heavy
refunders (many pre-shipment cancels, never abuse), abusers and new-account rings.
Abusers first build a record: from a young account, a burst of cheap orders at a few
shops, confirmed quickly and hardly ever refunded; then, at a random onset, refund-only
claims after the goods arrived and "not received" claims. Rings sign up together, shop at
a couple of shared shops and burst soon after sign-up. Honest newcomers sometimes shop in a
welcome burst of cheap orders too, so a record-building phase is a hint, not a proof. Any
account with a month of history may be taken over, at a constant hazard: the thief buys
resellable, high-priced goods at new shops and files abusive claims for a few days until the
owner recovers the account. Shops are good, slow shippers, or ship before entering the
tracking number (the policy's named risk). Every order goes through payment, tracking,
delivery, completion or cancellation; after-sales requests come before and after shipment,
with outcomes and resolution times; abuse is confirmed late, and not always.

Abusive requests come in *episodes* (an abuser's career, a ring's burst, a takeover), whose
onsets, lengths, rates and confirmation probabilities are drawn from known laws, so
`oracle_scores` computes from the hidden truth the exact chance that a buyer is *bad* as
of T: the best score any model can reach.

Timestamps are generated as float days since `start` and written as whole seconds. The
log is an export of [start, end): buyers may have registered before `start` (their
activity before it is not in the export), and every later timestamp at or after `end` is
empty, as the platform would show it at `end`.

Modules, one job each: `params` (vocabularies and `WorldParams`), `laws` (delays and the
confirmation law), `records` (the typed records the generators pass on), `population`
(shops and buyers), `shopping` (honest orders and requests), `abuse` (abusive episodes'
requests), `lifecycle` (what both share), `tables` (records to the log and the truth),
`world` (`simulate`), `profiles` (the named worlds), `oracle` (`oracle_scores`), `writer`
(`write_world`). docs/simulator.md describes the profiles.
"""

from features.simulate.laws import Delay
from features.simulate.oracle import oracle_scores
from features.simulate.params import (
    ABUSER_CAREER,
    ABUSER_ONSET,
    BUYER_TYPES,
    CATEGORIES,
    CATEGORY_NAMES,
    REQUEST_CLASSES,
    RING_BURST,
    RING_ONSET,
    SHOP_TYPES,
    TAKEOVER_BURST,
    TAKEOVER_WAIT,
    WorldParams,
)
from features.simulate.profiles import PROFILES, Profile, UnknownProfileError, get_profile
from features.simulate.world import SimulatedWorld, simulate
from features.simulate.writer import check_world_dir, write_world

__all__ = [
    "ABUSER_CAREER",
    "ABUSER_ONSET",
    "BUYER_TYPES",
    "CATEGORIES",
    "CATEGORY_NAMES",
    "REQUEST_CLASSES",
    "RING_BURST",
    "RING_ONSET",
    "SHOP_TYPES",
    "TAKEOVER_BURST",
    "TAKEOVER_WAIT",
    "PROFILES",
    "Delay",
    "Profile",
    "SimulatedWorld",
    "UnknownProfileError",
    "WorldParams",
    "check_world_dir",
    "get_profile",
    "oracle_scores",
    "simulate",
    "write_world",
]

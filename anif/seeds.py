"""The one seed derivation: a seed for each purpose from a master seed (campaign, sampler run)."""

from __future__ import annotations

import hashlib

import numpy as np


def seed_of(*parts) -> int:
    """A 31-bit seed from a master seed and what it is for (ints and strings), e.g.
    ``seed_of(campaign_seed, cycle, "select")`` or a work item's ``seed_of(run_seed, index)``:
    independent of how many other seeds are drawn and of the order they are drawn in."""
    ints = [int(p) if isinstance(p, (int, np.integer)) else int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:8],
                                                                           "little") for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] & 0x7FFFFFFF)

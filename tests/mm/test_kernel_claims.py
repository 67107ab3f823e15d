"""Which profile stands for which real kernel release (mmlab.kernels.CLAIMS)."""

from __future__ import annotations

import pytest

from mmlab.kernels import CLAIMS, KERNELS, base_profile, claiming_profile, get_kernel, parse_release


@pytest.mark.parametrize("release,profile", [
    ("6.18.44-fc-v595", "v6.18"), ("6.4.0", "v6.18"), ("7.1-rc2", "v6.18"),
    ("6.3.13", None), ("4.19.0-26-amd64", None),
    ("3.9.11", "v3.9"), ("3.8.13", "v3.7"), ("3.7.0", "v3.7"), ("3.6.11", None), ("2.6.32-754", None),
])
def test_a_release_is_claimed_by_the_profile_whose_range_holds_it(release: str, profile: str | None) -> None:
    assert claiming_profile(release) == profile


def test_claims_do_not_overlap_and_name_real_profiles() -> None:
    spans = sorted(CLAIMS.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert set(CLAIMS) <= set(KERNELS)


def test_a_switch_flipped_variant_has_its_base_profile() -> None:
    assert base_profile(get_kernel("v6.18+per_vma_lock=off")).name == "v6.18"
    assert base_profile(get_kernel("v3.7+patch3")).name == "v3.7"
    assert base_profile(get_kernel("bounded")).name == "bounded"


def test_parse_release_refuses_what_is_not_a_release() -> None:
    assert parse_release("v6.18") == (6, 18)
    with pytest.raises(ValueError):
        parse_release("linux")

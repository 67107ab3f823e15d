"""Which profile stands for which real kernel release (mmlab.kernels.CLAIMS)."""

from __future__ import annotations

import pytest

from mmlab.kernels import (CLAIMS, KERNELS, SINCE, V6_18, Kernel, base_profile, claiming_profile, get_kernel,
                           parse_release)


def _without(*switches: str) -> Kernel:
    """v6.18 with these switches at Kernel's defaults."""
    default = Kernel("default").switches()
    return V6_18.with_switches(**{k: default[k] for k in switches})


@pytest.mark.parametrize("release,profile", [
    ("6.18.44-fc-v595", "v6.18"), ("6.17.0", "v6.18"), ("7.1-rc2", "v6.18"),
    ("3.9.11", "v3.9"), ("3.14.79", "v3.9"), ("3.8.13", "v3.7"), ("3.7.0", "v3.7"), ("3.6.11", None), ("2.6.32-754", None),
])
def test_a_release_is_claimed_by_the_profile_of_its_behaviour(release: str, profile: str | None) -> None:
    assert claiming_profile(release) == profile


@pytest.mark.parametrize("release,off", [
    ("6.16.3", ("madvise_vma_lock", "mremap_move_multi_vma")),
    ("6.4.0", ("madvise_vma_lock", "mremap_move_multi_vma", "madv_guard", "map_droppable", "thp_align_anon")),
    ("6.3.13", ("madvise_vma_lock", "mremap_move_multi_vma", "madv_guard", "map_droppable", "thp_align_anon",
                "per_vma_lock")),
    ("5.15.0-100-generic", ("madvise_vma_lock", "mremap_move_multi_vma", "madv_guard", "map_droppable",
                            "thp_align_anon", "per_vma_lock", "madv_dontneed_locked", "thp_get_unmapped_area")),
    ("4.19.0-26-amd64", ("madvise_vma_lock", "mremap_move_multi_vma", "madv_guard", "map_droppable",
                         "thp_align_anon", "per_vma_lock", "madv_dontneed_locked", "thp_get_unmapped_area",
                         "populate_skips_inaccessible", "mremap_dontunmap", "madv_cold_pageout", "munmap_downgrade")),
])
def test_a_kernel_is_held_to_v6_18_without_the_newer_behaviours(release: str, off: tuple[str, ...]) -> None:
    """6.4-6.16 have per-VMA-lock faults but take mmap_lock in MADV_DONTNEED: never plain v6.18."""
    spec = claiming_profile(release)
    assert spec is not None and spec.startswith("v6.18+") and "madvise_vma_lock=off" in spec
    assert get_kernel(spec).switches() == _without(*off).switches()


@pytest.mark.parametrize("switch", sorted(SINCE))
def test_a_kernel_older_than_a_behaviour_is_held_to_a_profile_without_it(switch: str) -> None:
    major, minor = SINCE[switch]
    before = f"{major}.{minor - 1}.0" if minor else {4: "3.19.0", 5: "4.20.0", 6: "5.19.0", 3: "2.6.39"}[major]
    at = f"{major}.{minor}.0"
    assert getattr(get_kernel(claiming_profile(at)), switch) == getattr(V6_18, switch)
    if claiming_profile(before) is not None:
        assert getattr(get_kernel(claiming_profile(before)), switch) == getattr(Kernel("default"), switch)


def test_3_15_to_3_19_is_v3_9_with_fault_around() -> None:
    """Fault-around (do_fault_around(), 3.15) is the one switch between v3.9 and 4.0."""
    k = get_kernel(claiming_profile("3.19.8"))
    assert k.diff(get_kernel("v3.9")) == {"fault_around_pages": (16, 0)}


def test_every_behaviour_v6_18_adds_has_a_release() -> None:
    """A switch v6.18 sets with no SINCE entry would be claimed for every release: add its version."""
    default = Kernel("default").switches()
    assert {k for k, v in V6_18.switches().items() if v != default[k]} == set(SINCE)


def test_claims_cover_every_release_from_the_floor_once_and_parse() -> None:
    assert all(a[1] == b[0] for a, b in zip(CLAIMS, CLAIMS[1:]))
    for lo, _hi, spec in CLAIMS:
        assert get_kernel(spec).switches() == get_kernel(claiming_profile(f"{lo[0]}.{lo[1]}.0")).switches()


def test_a_switch_flipped_variant_has_its_base_profile() -> None:
    assert base_profile(get_kernel("v6.18+per_vma_lock=off")).name == "v6.18"
    assert base_profile(get_kernel("v3.7+patch3")).name == "v3.7"
    assert base_profile(get_kernel("bounded")).name == "bounded"


def test_parse_release_refuses_what_is_not_a_release() -> None:
    assert parse_release("v6.18") == (6, 18)
    with pytest.raises(ValueError):
        parse_release("linux")

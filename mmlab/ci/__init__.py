"""CI race detection at scale: seed ranges, merged results, hang guards and the suite runner
behind the pytest plugin (:mod:`mmlab.pytest_plugin`) and ``mmlab sweep``.

Distribution is pytest-xdist's job: every seed of every seeded test or stress suite is its own
test item, so ``-n N`` spreads them over processes and ``--tx ssh=...`` over machines. What is
mmlab's own lives here: what a seed range is, how one seed of a suite runs, how per-worker
outcome counts and HDR histograms add up into one result, and how a hang becomes a failure.
"""

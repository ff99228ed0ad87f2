"""Studies: complete experiments built on the public API, each producing saved results.

* :mod:`memlens.studies.planted`: the synthetic known-answer experiment behind ``memlens demo``.
"""

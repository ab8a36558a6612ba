"""hybridtheory: hybrid zeroth-order / first-order random reshuffling, its theory and its measurement.

Modules mirror the theory: ``assumptions`` (HGS constants) -> ``objectives`` (families) ->
``algorithm`` (sampler, ZO estimator, hybrid step: the one core, also used by ``llm_experiments``)
-> ``bounds`` (Theorem 1, Corollaries 1-2) -> ``measurement`` (experiments returning
(measured, bound)) -> ``figures``.
"""
__version__ = "0.1.0"

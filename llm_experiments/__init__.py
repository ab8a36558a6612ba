"""llm_experiments: hybrid ZO/FO fine-tuning of Hugging Face causal LMs with peft, on ``hybridtheory.algorithm``.

Entry points: ``llm-hybrid`` / ``python -m llm_experiments`` (:mod:`llm_experiments.cli`). The training loop
is :mod:`llm_experiments.trainer`; it drives the one algorithm core (sampler, ZO estimator, hybrid step).
Heavy dependencies (transformers, peft) are imported lazily by the modules that need them.
"""
__all__ = ["__version__"]
__version__ = "0.1.0"

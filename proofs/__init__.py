"""Machine-checked companion of the proof documents in ``proofs/*.md``.

* :mod:`proofs.symbolic`: the proved expressions (Theorem 1, Corollaries 1-2, family constants) as SymPy
  objects, plus the symbolic identities the proofs rely on. ``hybridtheory.bounds`` is tested against it.
* :mod:`proofs.verify`: Monte Carlo verification of every lemma and of Theorem 1 on the synthetic
  families (``python -m proofs.verify [--quick]``).
"""

"""Reference computations used only by tests (explicit, slow, obviously correct).

* :mod:`~tests.reference.ggn`: the one explicit GGN (``torch.func`` Jacobians);
* :mod:`~tests.reference.indices`: where parameters sit in a flat vector (``W_aug`` order included);
* :mod:`~tests.reference.dense`: the dense posterior (block curvature, precision, covariance);
* :mod:`~tests.reference.curvatures`: KFAC/diagonal blocks built without the engine, random SPD factors;
* :mod:`~tests.reference.models`: the tiny networks; :mod:`~tests.reference.cases`: the declared table of
  network × input × task cases; :mod:`~tests.reference.small_posterior`: a hand-built two-block posterior.
"""

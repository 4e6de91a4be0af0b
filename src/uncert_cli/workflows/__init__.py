"""The library half of each command: fit, tune, evaluate (ood, attack), compare, track, toy.

A workflow loads models and data, opens and writes factor files, and calls the numbers-in,
numbers-out code of :mod:`uncert_cli.curvature`, :mod:`uncert_cli.posterior` and
:mod:`uncert_cli.analysis`; it returns results and prints nothing. The CLI (:mod:`uncert_cli.cli`)
parses options and renders results around it.
"""

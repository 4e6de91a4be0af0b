"""Leaf utilities every layer may import: errors, self-registering tables, atomic writes, the file
session, input-file checks, memory sizes, device, distributed, progress, slow-path notices, model
state, the vocabulary and the likelihood. Nothing here imports another uncert_cli package.
"""

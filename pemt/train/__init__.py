"""Training: shards (:mod:`pemt.train.shards`), streaming loader (:mod:`pemt.train.data`),
objectives (:mod:`pemt.train.losses`) and the trainer (:mod:`pemt.train.trainer`).

Importing this package imports nothing heavy; each submodule is imported where it is used.
"""

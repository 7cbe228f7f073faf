"""Evaluations of trained models. ``pemt eval neardup``: near-duplicate search under edits
(:mod:`pemt.eval.neardup`; file edits in :mod:`pemt.eval.clips`, report in
:mod:`pemt.eval.report`). Building the set is torch-free; embedding with a checkpoint imports
torch, the perceptual-hash baseline ``imagehash`` (the ``eval`` extra)."""

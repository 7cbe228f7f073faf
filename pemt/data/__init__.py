"""Datasets: the synthetic labeled audio-visual set (:mod:`pemt.data.synth`)."""

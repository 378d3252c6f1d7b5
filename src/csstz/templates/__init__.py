"""Torch-free template stage: template bases (kcorrect or learned from the training split) and the
redshift likelihood of a spectrum against them (NNLS fit, FFT cross-correlation chi2 with a coefficient prior)."""

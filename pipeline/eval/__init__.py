"""Evaluation: pass@k / avg@n / maj@k estimators and evaluation of an engine on problems."""

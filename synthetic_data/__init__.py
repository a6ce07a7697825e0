"""Synthetic patient data for training, data-gate and drift tests."""

"""The fake Azure ML service, in parts (assembled in tests/azure/fake_arm.py)."""

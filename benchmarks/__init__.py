"""Speed checks, each against its baseline measured in the same run: ``python -m benchmarks NAME``."""

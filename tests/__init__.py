"""The uncert test suite, a package: shared references live in tests.reference, fixtures in conftest.py."""

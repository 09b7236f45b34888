"""Development and test only: the simulators (SMSC, Twilio, Android phone), the harness that runs
the whole platform as processes (`platform.py`, used by `make run`, the tests and the benchmarks)
and its development PKI. Installed with the repository; removed from the production image
(deploy/docker/Dockerfile), and no service or runtime library imports it (tests/unit/test_packaging.py)."""

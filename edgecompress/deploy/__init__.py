"""The device side: programs the host copies to a device (or a temp folder) and runs there.

Nothing in this folder imports edgecompress; every module runs on Python >= 3.8 with the standard
library plus the runtime being measured. Run it as `python ec_bench.py job.json`.
"""

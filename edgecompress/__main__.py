"""`python -m edgecompress` (what torchrun starts: torchrun --nproc-per-node=N -m edgecompress deploy ...)."""
import sys

from .cli import main

sys.exit(main())

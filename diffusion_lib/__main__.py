"""`python -m diffusion_lib`: see `diffusion_lib.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

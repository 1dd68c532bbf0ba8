"""DVC stage `check`: see imgae_dx.pipeline.check."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.check import check

if __name__ == "__main__":
    sys.exit(stage_main(check, doc=__doc__))

"""DVC stage `detector@<arch>`: see imgae_dx.pipeline.detector."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.detector import detector

if __name__ == "__main__":
    sys.exit(stage_main(detector, per_arch=True, doc=__doc__))

"""DVC stage `detector@<arch>-<seed>`: see imgae_dx.pipeline.detector."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.detector import detector

if __name__ == "__main__":
    sys.exit(stage_main(detector, per_arch=True, per_seed=True, doc=__doc__))

"""DVC stage `train@<arch>`: see imgae_dx.pipeline.train."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.train import train

if __name__ == "__main__":
    sys.exit(stage_main(train, per_arch=True, doc=__doc__))

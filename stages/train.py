"""DVC stage `train@<arch>-<seed>`: see imgae_dx.pipeline.train."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.train import train

if __name__ == "__main__":
    sys.exit(stage_main(train, per_arch=True, per_seed=True, doc=__doc__))

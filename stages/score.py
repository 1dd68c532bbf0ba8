"""DVC stage `score@<arch>-<seed>`: see imgae_dx.pipeline.score."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.score import score

if __name__ == "__main__":
    sys.exit(stage_main(score, per_arch=True, per_seed=True, doc=__doc__))

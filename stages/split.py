"""DVC stage `split`: see imgae_dx.pipeline.split."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.split import split

if __name__ == "__main__":
    sys.exit(stage_main(split, doc=__doc__))

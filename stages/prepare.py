"""DVC stage `prepare`: see imgae_dx.pipeline.prepare."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.prepare import prepare

if __name__ == "__main__":
    sys.exit(stage_main(prepare, doc=__doc__))

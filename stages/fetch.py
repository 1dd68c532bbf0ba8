"""DVC stage `fetch`: see imgae_dx.pipeline.fetch."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.fetch import fetch

if __name__ == "__main__":
    sys.exit(stage_main(fetch, doc=__doc__))

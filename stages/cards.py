"""DVC stage `cards`: see imgae_dx.pipeline.cards."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.cards import cards

if __name__ == "__main__":
    sys.exit(stage_main(cards, doc=__doc__))

"""DVC stage `report`: see imgae_dx.pipeline.report."""

import sys

from imgae_dx.pipeline import stage_main
from imgae_dx.pipeline.report import report

if __name__ == "__main__":
    sys.exit(stage_main(report, doc=__doc__))

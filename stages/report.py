"""DVC stage `report`: see imgae_dx.pipeline.report."""

import json

from imgae_dx.config import load_params
from imgae_dx.pipeline.report import report

if __name__ == "__main__":
    print(json.dumps(report(load_params()), indent=1))

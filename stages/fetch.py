"""DVC stage `fetch`: see imgae_dx.pipeline.fetch."""

import json

from imgae_dx.config import load_params
from imgae_dx.pipeline.fetch import fetch

if __name__ == "__main__":
    print(json.dumps(fetch(load_params()), indent=1))

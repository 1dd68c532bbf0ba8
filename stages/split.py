"""DVC stage `split`: see imgae_dx.pipeline.split."""

import json

from imgae_dx.config import load_params
from imgae_dx.pipeline.split import split

if __name__ == "__main__":
    print(json.dumps(split(load_params()), indent=1))

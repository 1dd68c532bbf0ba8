"""DVC stage `train@<arch>`: see imgae_dx.pipeline.train."""

import json

from imgae_dx.config import load_params
from imgae_dx.pipeline import arch_argument
from imgae_dx.pipeline.train import train

if __name__ == "__main__":
    params = load_params()
    print(json.dumps(train(params, arch_argument(params, __doc__)), indent=1))

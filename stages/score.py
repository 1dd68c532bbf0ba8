"""DVC stage `score@<arch>`: see imgae_dx.pipeline.score."""

import json

from imgae_dx.config import load_params
from imgae_dx.pipeline import arch_argument
from imgae_dx.pipeline.score import score

if __name__ == "__main__":
    params = load_params()
    print(json.dumps(score(params, arch_argument(params, __doc__)), indent=1))

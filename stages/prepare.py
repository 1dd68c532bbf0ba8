"""DVC stage `prepare`: see imgae_dx.pipeline.prepare."""

import json

from imgae_dx.config import load_params
from imgae_dx.pipeline.prepare import prepare

if __name__ == "__main__":
    print(json.dumps(prepare(load_params()), indent=1))

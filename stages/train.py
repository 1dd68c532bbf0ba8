"""DVC stage `train@<arch>`: see imgae_dx.pipeline.train."""

import argparse
import json

from imgae_dx.config import load_params
from imgae_dx.pipeline.train import train

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch", help="architecture name (an entry of `models` in params.yaml)")
    args = ap.parse_args()
    params = load_params()
    if args.arch not in params["models"]:
        raise SystemExit(
            f"params.yaml: models: {args.arch!r} is not listed (models: {params['models']})"
        )
    print(json.dumps(train(params, args.arch), indent=1))

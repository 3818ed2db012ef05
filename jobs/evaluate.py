"""Entry point for the evaluate stage: `python jobs/evaluate.py --config configs/adult_tvae.yaml [--set key=value]`.

A thin adapter: all logic lives in gen_pipeline (see gen_pipeline/stages/).
"""

import sys

from gen_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))

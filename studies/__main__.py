"""``python -m bayes_smlm.studies NAME [--preset smoke|cpu|paper] [--seed S] [--out DIR]``."""

import sys

from bayes_smlm.studies.registry import run_as_script

sys.exit(run_as_script())

"""Dosimetric evaluation of sCT predictions (photon + proton plans): see ``python -m scripts.evaluate_dose --help``
and docs/dose.md."""

import sys

from pipeline.dose.run import main

if __name__ == "__main__":
    sys.exit(main())

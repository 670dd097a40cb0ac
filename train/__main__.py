"""``python -m ganrt.train ...`` -- the same as ``ganrt train ...``; what torchrun starts in each process:

    torchrun --nproc-per-node 2 -m ganrt.train --preset demo --out runs/demo
"""

import sys

from ganrt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

"""gumbelrs against its torch equivalents, timed alternately in one process.

The benchmark lives in the package (``gumbelrs bench``); this script runs it:

    python benches/compare_torch.py [--threads 1 2] [--repeats 15] [--markdown] [--only SUBSTR]
    python benches/compare_torch.py --device cuda [--repeats 15] [--markdown] [--only SUBSTR]

``--device cuda`` times the same cases on the GPU (CUDA events; a device-to-device copy as
the bandwidth yardstick) and exits with status 2 when torch sees no CUDA device.
"""

from gumbelrs.bench import main

if __name__ == "__main__":
    main()

"""gumbelrs against its torch equivalents, timed alternately in one process.

The benchmark lives in the package (``gumbelrs bench``); this script runs it:

    python benches/compare_torch.py [--threads 1 2] [--repeats 15] [--markdown] [--only SUBSTR]
"""

from gumbelrs.bench import main

if __name__ == "__main__":
    main()

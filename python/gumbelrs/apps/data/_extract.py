"""How ``promoters.tsv`` and ``splice.tsv`` were made (run once, not at run time).

The sources are the R data files of two Debian packages, read with the
``rdata`` package (``pip install rdata``)::

    apt-get download r-cran-kernlab r-cran-mlbench
    for f in r-cran-*.deb; do dpkg-deb -x "$f" deb; done
    python -m gumbelrs.apps.data._extract deb/usr/lib/R/site-library

- ``kernlab/data/promotergene.rda``: 106 E. coli sequences of 57 nucleotides,
  53 promoters (+) and 53 non-promoters (-); UCI "Molecular Biology (Promoter
  Gene Sequences)" (Harley, Reynolds and Noordewier; Towell, Shavlik and
  Noordewier 1990).
- ``mlbench/data/DNA.rda``: the StatLog version of the UCI "Molecular Biology
  (Splice-junction Gene Sequences)" set (Noordewier, Towell and Shavlik 1991):
  3,186 primate sequences of 60 nucleotides, classes ``ei`` (exon/intron
  boundary, donor), ``ie`` (intron/exon, acceptor) and ``n`` (neither), each
  nucleotide stored as three indicator variables: A = 100, C = 010, G = 001,
  T = 000.
"""

from __future__ import annotations

import sys
from pathlib import Path

CODES = {(1, 0, 0): "a", (0, 1, 0): "c", (0, 0, 1): "g", (0, 0, 0): "t"}


def main(root: str) -> None:
    import rdata

    here = Path(__file__).parent
    promoters = rdata.read_rda(Path(root) / "kernlab/data/promotergene.rda")["promotergene"]
    with open(here / "promoters.tsv", "w") as f:
        for _, row in promoters.iterrows():
            f.write(f"{row['Class']}\t{''.join(str(v) for v in row.iloc[1:])}\n")
    dna = rdata.read_rda(Path(root) / "mlbench/data/DNA.rda")["DNA"]
    with open(here / "splice.tsv", "w") as f:
        for _, row in dna.iterrows():
            bits = [int(str(v)) for v in row.iloc[:180]]
            seq = "".join(CODES[tuple(bits[i:i + 3])] for i in range(0, 180, 3))
            f.write(f"{row['Class']}\t{seq}\n")


if __name__ == "__main__":
    main(sys.argv[1])

"""losstopo: barcodes of minima, TO-score and permutation points for neural-network loss landscapes."""

__version__ = "0.1.0"

"""Thin entry points (`main(argv)`) for spark-submit, training processes and scripts."""

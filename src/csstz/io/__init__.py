"""File layouts (HDF5 spectra, FITS catalogues and predictions) and atomic writes.

Only this sub-package knows how files are laid out; everything else passes
arrays and tables.
"""

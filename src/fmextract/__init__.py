"""fmextract."""

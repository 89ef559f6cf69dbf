"""Real data sets shipped in packages (nothing is downloaded at run time)."""

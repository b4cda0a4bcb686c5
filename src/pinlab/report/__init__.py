"""Reports: the compare matrix as data and as text."""

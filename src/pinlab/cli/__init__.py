"""pinlab's command line: thin wrappers that parse, call and print (entry: pinlab.cli.main)."""

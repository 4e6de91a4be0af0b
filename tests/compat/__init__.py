"""Factor files and JSON documents written by an earlier uncert still read the same."""

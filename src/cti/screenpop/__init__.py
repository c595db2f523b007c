"""Screen pops: who sees which call, and when."""

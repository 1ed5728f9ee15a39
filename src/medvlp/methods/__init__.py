"""medvlp.methods."""

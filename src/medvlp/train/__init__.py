"""medvlp.train."""

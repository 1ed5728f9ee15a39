"""medvlp.data."""

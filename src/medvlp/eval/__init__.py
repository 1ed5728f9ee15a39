"""medvlp.eval."""
